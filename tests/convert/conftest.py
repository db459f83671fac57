"""Shared fixtures for the conversion tests: tiny random Llama models made with `transformers`,
their imports, one short training run and one multi-rank launch that checks several things.

Models (built here, no hub): `gqa` (flavor `tiny` shape, sharded safetensors), `mha` (`tiny-mha`
shape, a `pytorch_model.bin` pickle), both fp32 with the full 512-row vocabulary and a Code
Llama-style 512-piece tokenizer; `grow` (tiny shape, bf16, 496 rows and a 496-piece tokenizer:
Llama 2 before Code Llama's 16 infilling pieces, scaled down); `custom` (a shape no flavor has,
CUSTOM_SHAPE, fp32, 512 rows), imported through the command line at TP2 x PP2.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megacode.config import Flavor
from megacode.convert import ExportOptions, ImportOptions, export_hf, import_hf
from tests.training.launch import REPO, torchrun, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))  # spm_fixtures

WORKER = REPO / "tests" / "convert" / "megacode_worker.py"
BASE_PIECES = 496  # + Code Llama's 16 pieces = the tiny flavors' 512
# The run that trains the imported model: 16 sequences of 32 tokens per step, RoPE base 1e6 as
# after long-context fine-tuning, so the export must carry it into config.json.
TRAIN_SHAPE = ["data.seq_length=32", "train.global_batch_tokens=512", "train.micro_batch_size=2",
               "train.iters=3", "schedule.warmup_iters=1", "train.eval_interval=0", "logging.dir=null",
               "model.rope_base=1000000", "checkpoint.interval=0"]
TRAIN_LAYOUT = (1, 2, None)  # TP1 x PP2 on 2 ranks: not the TP2 x PP2 the model was imported at
EVAL_LAYOUT = (2, 1, None)  # TP2 x PP1 (DP2): a third layout
# A Llama no registered flavor matches: hidden 128, 8 heads in 2 KV groups (head dim 16), FFN 344,
# RoPE θ 1e6 and RMSNorm eps 1e-6 (both differ from the flavors', so a dropped value shows).
CUSTOM_SHAPE = Flavor("custom", num_layers=4, hidden_size=128, num_attention_heads=8, num_query_groups=2,
                      ffn_hidden_size=344, vocab_size=512, rope_base=1e6, norm_epsilon=1e-6,
                      max_position_embeddings=512)


@pytest.fixture(scope="session")
def tokenizers(tmp_path_factory) -> dict[str, Path]:
    """A Llama-like 496-piece BPE model trained here, and its Code Llama extension (512 pieces)."""
    from spm_fixtures import stdlib_texts, train_model

    from megacode.tokenizer import build_codellama_tokenizer

    lines = [ln for text in stdlib_texts(400_000) for ln in text.splitlines() if ln.strip()]
    rng = random.Random(2)  # "☺" alone, as in Llama 2 (enc' relies on it)
    lines += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz(){}[]:;.,") + "☺" for _ in range(40)) for _ in range(60)]
    base = train_model(lines, BASE_PIECES)
    out = tmp_path_factory.mktemp("tokenizers")
    extended = build_codellama_tokenizer(base, out / "codellama.model", allow_non_llama_base=True)
    return {"base": Path(base), "codellama": extended}


def make_hf_model(directory: Path, flavor: str | Flavor, vocab: int, dtype: torch.dtype, seed: int,
                  tokenizer: Path, fmt: str = "safetensors") -> Path:
    """A random LlamaForCausalLM of a flavor's (or a given) shape, saved as Hugging Face does."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from megacode.config import get_flavor

    f = get_flavor(flavor) if isinstance(flavor, str) else flavor
    config = LlamaConfig(vocab_size=vocab, hidden_size=f.hidden_size, intermediate_size=f.ffn_hidden_size,
                         num_hidden_layers=f.num_layers, num_attention_heads=f.num_attention_heads,
                         num_key_value_heads=f.num_query_groups, max_position_embeddings=f.max_position_embeddings,
                         rms_norm_eps=f.norm_epsilon, rope_theta=f.rope_base, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # HF initialises norms to 1: perturb them so a swapped norm shows
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(0.1 * torch.randn_like(param))
    model = model.to(dtype)
    if fmt == "bin":
        config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    else:
        model.save_pretrained(directory, max_shard_size="150KB")
    shutil.copyfile(tokenizer, directory / "tokenizer.model")
    return directory


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory, tokenizers) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "gqa": make_hf_model(root / "gqa", "tiny", 512, torch.float32, 1, tokenizers["codellama"]),
        "mha": make_hf_model(root / "mha", "tiny-mha", 512, torch.float32, 2, tokenizers["codellama"], fmt="bin"),
        "grow": make_hf_model(root / "grow", "tiny", BASE_PIECES, torch.bfloat16, 3, tokenizers["base"]),
        "custom": make_hf_model(root / "custom", CUSTOM_SHAPE, 512, torch.float32, 4, tokenizers["codellama"]),
    }


@pytest.fixture(scope="session")
def custom_import(tmp_path_factory, hf_models) -> dict:
    """`custom` imported by tools/convert_checkpoint.py at TP2 x PP2: the checkpoint and what it printed."""
    out = tmp_path_factory.mktemp("custom") / "ckpt"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), "hf-to-megacode",
                           "--input", str(hf_models["custom"]), "--output", str(out), "--tp", "2", "--pp", "2",
                           "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"checkpoint": out, "stdout": done.stdout}


@pytest.fixture(scope="session")
def custom_export(tmp_path_factory, custom_import) -> Path:
    return export_hf(ExportOptions(input=custom_import["checkpoint"], output=tmp_path_factory.mktemp("ex") / "hf",
                                   progress=False))


@pytest.fixture(scope="session")
def imported(tmp_path_factory, hf_models) -> dict[str, Path]:
    """gqa and mha imported at TP2 x PP2 (flavor inferred), grow at TP2 x PP4 as flavor tiny."""
    root = tmp_path_factory.mktemp("megacode")
    out = {name: import_hf(ImportOptions(input=hf_models[name], output=root / name, tp=2, pp=2, progress=False))
           for name in ("gqa", "mha")}
    out["grow"] = import_hf(ImportOptions(input=hf_models["grow"], output=root / "grow", tp=2, pp=4,
                                          flavor="tiny", progress=False))
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, imported) -> Path:
    """megacode.train: 3 steps from the imported gqa model at TP1 x PP2 on 2 gloo ranks."""
    tmp = tmp_path_factory.mktemp("trained")
    tp, pp, vp = TRAIN_LAYOUT
    train(2, TRAIN_SHAPE + [f"parallel.tp={tp}", f"parallel.pp={pp}", f"parallel.vp={vp or 'null'}",
                            f"checkpoint.load={imported['gqa']}", "checkpoint.finetune=true",
                            f"checkpoint.dir={tmp / 'ckpt'}",
                            f"data.tokenizer_model={imported['gqa'] / 'tokenizer.model'}"], tmp, "train")
    return tmp / "ckpt"


@pytest.fixture(scope="session")
def worker(tmp_path_factory, imported, trained) -> dict:
    """One 4-rank launch: logits of both imports at TP2 x PP2 and of gqa at TP1 x PP2 x VP2,
    evaluation of the trained run at TP2 x PP1 (DP2)."""
    tmp = tmp_path_factory.mktemp("worker")
    torch.manual_seed(7)
    tokens = torch.randint(0, 512, (4, 25))  # 4 sequences of 24 tokens + the next one
    torch.save(tokens, tmp / "tokens.pt")
    runs = {"mha": [2, 2, None], "gqa": [2, 2, None], "gqa_vp": [1, 2, 2]}  # the last: interleaved, DP2
    jobs = [{"kind": "logits", "checkpoint": str(imported[name.split("_")[0]]), "layout": layout,
             "tokens": str(tmp / "tokens.pt"), "out": str(tmp / f"logits_{name}.pt")} for name, layout in runs.items()]
    jobs.append({"kind": "evaluate", "checkpoint": str(trained), "layout": list(EVAL_LAYOUT),
                 "overrides": ["train.eval_iters=1", "train.eval_interval=1"], "out": str(tmp / "evaluate.json")})
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    torchrun(4, [str(WORKER), str(tmp / "jobs.json")], timeout=400)
    results = {name: [torch.load(path) for path in sorted(tmp.glob(f"logits_{name}.pt.dp*"))] for name in runs}
    results["tokens"] = tokens
    results["evaluate"] = json.loads((tmp / "evaluate.json").read_text())
    return results


@pytest.fixture(scope="session")
def exported_trained(tmp_path_factory, trained) -> Path:
    return export_hf(ExportOptions(input=trained, output=tmp_path_factory.mktemp("export") / "hf", progress=False))
