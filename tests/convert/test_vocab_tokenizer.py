"""Vocabulary growth on import and the exported tokenizer.

The `grow` model is Llama 2 before Code Llama, scaled down: 496 rows and a 496-piece tokenizer,
bf16. Imported as flavor `tiny` (512), it gains Code Llama's 16 pieces: new embedding and output
rows are the mean of the old ones, the tokenizer gets ▁<PRE> ▁<SUF> ▁<MID> ▁<EOT> at base+7..10.
Exported, `AutoTokenizer` gives a `CodeLlamaTokenizer` whose infilling prompts use those ids.
"""

import pytest
import torch

from megacode.checkpoint.dist_ckpt import read_common
from megacode.checkpoint.tracker import step_dir
from megacode.convert import ExportOptions, export_hf
from megacode.convert.dcp_io import CheckpointReader
from megacode.tokenizer import load

PREFIX = "def add(a, b):\n    "
TEXT = "class Stack:\n    def push(self, item):\n        self.items.append(item)  # 42\n"


@pytest.fixture(scope="module")
def exported_grow(tmp_path_factory, imported):
    return export_hf(ExportOptions(input=imported["grow"], output=tmp_path_factory.mktemp("grow") / "hf",
                                   progress=False))


@pytest.mark.parametrize("megatron_key, hf_name", [("embedding.word_embeddings.weight", "model.embed_tokens.weight"),
                                                   ("output_layer.weight", "lm_head.weight")])
def test_new_rows_are_the_mean_row(imported, hf_models, megatron_key, hf_name):
    from safetensors import safe_open

    source = {}
    for path in hf_models["grow"].glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            if hf_name in handle.keys():
                source = handle.get_tensor(hf_name)  # [496, 64] bf16
    stored = CheckpointReader(step_dir(imported["grow"], 0)).read(megatron_key)
    assert stored.shape == (512, 64) and stored.dtype == torch.bfloat16
    assert torch.equal(stored[:496], source)
    mean = source.double().mean(0).to(torch.bfloat16)
    assert torch.equal(stored[496:], mean.expand(16, -1))
    assert not torch.equal(mean, torch.zeros_like(mean))


def test_import_extends_the_tokenizer(imported):
    root = imported["grow"]
    common = read_common(step_dir(root, 0))
    assert common["layout"]["pp"] == 4 and common["extra"]["hf_import"]["hf_vocab_size"] == 496
    tok = load(root / "tokenizer.model", backend="sentencepiece")
    assert tok.vocab_size == 512
    assert (tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id) == (503, 504, 505, 506)


def test_exported_model_gives_new_tokens_the_mean_logit(exported_grow):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(exported_grow)
    assert model.config.vocab_size == 512 and model.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(torch.tensor([[1, 40, 300, 7]])).logits[0]  # [4, 512]
    assert torch.equal(logits[:, 496:], logits[:, 496:497].expand(-1, 16))  # 16 identical mean rows
    assert not torch.equal(logits[:, 495], logits[:, 496])


def test_exported_tokenizer_is_code_llama_with_infilling(exported_grow, imported):
    from transformers import AutoTokenizer

    ours = load(imported["grow"] / "tokenizer.model", backend="sentencepiece")
    tok = AutoTokenizer.from_pretrained(exported_grow)
    assert type(tok).__name__ == "CodeLlamaTokenizer"
    assert (tok.prefix_id, tok.suffix_id, tok.middle_id, tok.eot_id) == (503, 504, 505, 506)
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert tok(TEXT)["input_ids"] == ours.encode(TEXT, bos=True)
    assert tok.decode(ours.encode(TEXT)) == TEXT
    # PSM prompt (DESIGN.md §1): BOS <PRE> enc(prefix) <SUF> enc'(suffix) <MID>. For a suffix that
    # starts with a space transformers 5 agrees with enc' exactly; for others it inserts "▁".
    suffix = "  return c\n"
    prompt = tok(PREFIX + "<FILL_ME>" + suffix)["input_ids"]
    assert prompt == [1, 503] + ours.encode(PREFIX) + [504] + ours.encode_infill(suffix) + [505]
    spm_prompt = tok(PREFIX + "<FILL_ME>" + suffix, suffix_first=True)["input_ids"]
    assert spm_prompt[:3] == [1, 503, 504] and 505 in spm_prompt


def test_exported_tokenizer_files(exported_grow):
    import json

    names = {p.name for p in exported_grow.iterdir()}
    assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    config = json.loads((exported_grow / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "CodeLlamaTokenizer"
    assert (config["prefix_token"], config["suffix_token"], config["middle_token"], config["eot_token"]) == \
        ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")


def test_tokenizer_without_infilling_exports_as_llama_tokenizer(tmp_path, tokenizers):
    """Code Llama 34B keeps Llama 2's 32,000 pieces: no infilling, LlamaTokenizer."""
    from transformers import AutoTokenizer

    from megacode.convert.tokenizer_files import write_hf_tokenizer

    info = write_hf_tokenizer(tokenizers["base"], tmp_path, 496, max_length=4096)
    assert not info.infill
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(tok).__name__ == "LlamaTokenizer" and len(tok) == 496
    assert tok(TEXT)["input_ids"] == load(tokenizers["base"]).encode(TEXT, bos=True)
