"""Round trips and the checkpoint's structure.

- HF → megacode (TP2 x PP2) → HF gives back every tensor bit for bit (GQA from sharded
  safetensors through the command line, MHA from a `pytorch_model.bin` through the API), and the
  result loads with `AutoModelForCausalLM`.
- An import at TP1 holds exactly the keys, global shapes, dtypes, chunks and objects that
  megacode.train's own save at TP1 holds; the layout and config are recorded in `common`.
- `--dtype` casts on either side.
"""

import json
import subprocess
import sys

import torch

from megacode.checkpoint.dist_ckpt import read_common
from megacode.checkpoint.tracker import read_tracker, step_dir
from megacode.convert import ExportOptions, ImportOptions, export_hf, import_hf
from megacode.convert.dcp_io import CheckpointReader
from tests.training.launch import REPO

TOOL = REPO / "tools" / "convert_checkpoint.py"


def hf_tensors(directory):
    """Every weight of an HF directory, read by safetensors / torch themselves."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(path))
    for path in sorted(directory.glob("pytorch_model*.bin")):
        out.update(torch.load(path, weights_only=True))
    return out


def assert_bit_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name].view(torch.uint8), b[name].view(torch.uint8)), name


def cli(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args), "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_gqa_round_trip_through_the_command_line(tmp_path, hf_models):
    source = hf_models["gqa"]
    ckpt, out = tmp_path / "ckpt", tmp_path / "hf"
    done = cli("hf-to-megacode", "--input", source, "--output", ckpt, "--tp", 2, "--pp", 2)
    assert done.returncode == 0, done.stderr
    done = cli("megacode-to-hf", "--input", ckpt, "--output", out, "--max-shard-size", "100KB")
    assert done.returncode == 0, done.stderr
    assert_bit_identical(hf_tensors(source), hf_tensors(out))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in hf_tensors(out).values())
    config = json.loads((out / "config.json").read_text())
    original = json.loads((source / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps"):
        assert config[key] == original[key], key
    assert config["rope_theta"] == 10000.0


def test_mha_bin_round_trip_and_transformers_loads_it(tmp_path, hf_models, imported):
    from transformers import AutoModelForCausalLM

    out = export_hf(ExportOptions(input=imported["mha"], output=tmp_path / "hf", progress=False))
    assert_bit_identical(hf_tensors(hf_models["mha"]), hf_tensors(out))
    model = AutoModelForCausalLM.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(hf_models["mha"])
    tokens = torch.arange(40).reshape(2, 20) * 7 % 512
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, reference(tokens).logits)
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)


def test_import_records_layout_and_config(imported):
    root = imported["gqa"]
    assert read_tracker(root) == 0
    common = read_common(step_dir(root, 0))
    assert common["step"] == 0 and common["layout"] == {"tp": 2, "pp": 2, "vp": None, "dp": 1}
    config = common["config"]
    assert config["model"]["flavor"] == "tiny" and config["model"]["num_layers"] is None
    assert (config["parallel"]["tp"], config["parallel"]["pp"]) == (2, 2)
    assert config["data"]["tokenizer_model"] == str(root / "tokenizer.model")
    assert read_common(step_dir(imported["mha"], 0))["config"]["model"]["flavor"] == "tiny-mha"


def _structure(ckpt_dir):
    """Model tensors → (shape, dtype, sorted chunks); objects → names. Optimizer/RNG left out."""
    md = CheckpointReader(ckpt_dir).metadata.state_dict_metadata
    tensors, objects = {}, set()
    for key, value in md.items():
        if key.startswith(("optimizer.", "rng_state")):
            continue
        if hasattr(value, "chunks"):
            chunks = sorted((tuple(c.offsets), tuple(c.sizes)) for c in value.chunks)
            tensors[key] = (tuple(value.size), value.properties.dtype, chunks)
        else:
            objects.add(key)
    return tensors, objects


def test_import_stores_what_megacode_train_saves(tmp_path, hf_models, trained):
    """The trained run saved at TP1 x PP2: an import at TP1 has the same keys and chunks (virtual
    stages change which rank writes a layer, not the chunks)."""
    ours = import_hf(ImportOptions(input=hf_models["gqa"], output=tmp_path / "tp1", tp=1, pp=2, vp=2, progress=False))
    assert read_common(step_dir(ours, 0))["layout"] == {"tp": 1, "pp": 2, "vp": 2, "dp": 1}
    theirs = step_dir(trained, read_tracker(trained))
    assert read_common(theirs)["layout"]["tp"] == 1
    mine_tensors, mine_objects = _structure(step_dir(ours, 0))
    their_tensors, their_objects = _structure(theirs)
    assert mine_tensors == their_tensors
    assert mine_objects == their_objects
    assert len(mine_tensors["decoder.layers.mlp.linear_fc1.weight"][2]) == 2 * 4  # gate + up per layer


def test_dtype_casts_on_import_and_export(tmp_path, hf_models):
    ckpt = import_hf(ImportOptions(input=hf_models["gqa"], output=tmp_path / "bf16", dtype="bf16", progress=False))
    reader = CheckpointReader(step_dir(ckpt, 0))
    assert {reader.dtype(k) for k in reader.metadata.state_dict_metadata if "." in k and "extra" not in k} == {torch.bfloat16}
    out = export_hf(ExportOptions(input=ckpt, output=tmp_path / "hf32", dtype="fp32", progress=False))
    source = hf_tensors(hf_models["gqa"])
    assert_bit_identical({k: v.to(torch.bfloat16).float() for k, v in source.items()}, hf_tensors(out))
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float32"
