"""Bad input fails with an error naming the file or value, and leaves nothing under the output
name (conversions write to a hidden partial directory and rename it at the end)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from megacode.convert import ConvertError, ExportOptions, ImportOptions, export_hf, import_hf
from megacode.convert.safetensors_io import HFWeights
from tests.training.launch import REPO


def copy_model(source, target):
    shutil.copytree(source, target)
    return target


def assert_nothing_written(output):
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.partial")]


def import_error(source, output, **kwargs) -> str:
    with pytest.raises(ConvertError) as err:
        import_hf(ImportOptions(input=source, output=output, progress=False, **kwargs))
    assert_nothing_written(output)
    return str(err.value)


def test_missing_shard_is_named(tmp_path, hf_models):
    source = copy_model(hf_models["gqa"], tmp_path / "in")
    index = json.loads((source / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (source / victim).unlink()
    assert victim in import_error(source, tmp_path / "out")


def test_truncated_shard_is_named(tmp_path, hf_models):
    source = copy_model(hf_models["gqa"], tmp_path / "in")
    shard = sorted(source.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    message = import_error(source, tmp_path / "out")
    assert shard.name in message and "truncated" in message


def test_config_not_matching_the_flavor(tmp_path, hf_models):
    message = import_error(hf_models["mha"], tmp_path / "out", flavor="tiny")
    assert "num_key_value_heads=4" in message and "flavor tiny: 2" in message


def test_shapes_no_flavor_has_are_checked_against_the_weights(tmp_path, hf_models):
    """No flavor matches, so config.json's shapes are used: weights of other shapes are named."""
    source = copy_model(hf_models["gqa"], tmp_path / "in")
    config = json.loads((source / "config.json").read_text())
    config["intermediate_size"] = 200
    (source / "config.json").write_text(json.dumps(config))
    message = import_error(source, tmp_path / "out")
    assert "gate_proj.weight has shape [176, 64], config.json implies [200, 64]" in message


UNSUPPORTED = {  # config.json field → a value megacode cannot build
    "rope_scaling": {"rope_type": "linear", "factor": 2.0},
    "attention_bias": True,
    "mlp_bias": True,
    "head_dim": 32,  # hidden 64 / 4 heads = 16
    "tie_word_embeddings": True,
    "hidden_act": "gelu",
}


@pytest.mark.parametrize("key", sorted(UNSUPPORTED))
def test_unsupported_field_is_refused_by_name(tmp_path, hf_models, key):
    source = tmp_path / "in"
    source.mkdir()
    config = json.loads((hf_models["gqa"] / "config.json").read_text())
    config[key] = UNSUPPORTED[key]
    (source / "config.json").write_text(json.dumps(config))  # refused from config.json alone
    message = import_error(source, tmp_path / "out")
    assert message.startswith(f"{source / 'config.json'}: {key}={json.dumps(UNSUPPORTED[key])} is not supported")
    assert "\n" not in message


def test_rope_type_of_transformers_5_is_refused_by_name(tmp_path, hf_models):
    source = tmp_path / "in"
    source.mkdir()
    config = json.loads((hf_models["gqa"] / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    (source / "config.json").write_text(json.dumps(config))
    assert 'rope_parameters.rope_type="llama3" is not supported' in import_error(source, tmp_path / "out")


def test_non_llama_architecture(tmp_path, hf_models):
    source = copy_model(hf_models["gqa"], tmp_path / "in")
    config = json.loads((source / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (source / "config.json").write_text(json.dumps(config))
    message = import_error(source, tmp_path / "out")
    assert "MistralForCausalLM" in message and str(source / "config.json") in message


def test_unexpected_tensor_is_named(tmp_path, hf_models):
    source = copy_model(hf_models["mha"], tmp_path / "in")
    state = torch.load(source / "pytorch_model.bin", weights_only=True)
    state["model.layers.1.self_attn.q_proj.bias"] = torch.zeros(64)
    torch.save(state, source / "pytorch_model.bin")
    assert "model.layers.1.self_attn.q_proj.bias" in import_error(source, tmp_path / "out")


def test_layout_that_does_not_fit(tmp_path, hf_models):
    assert "parallel.tp=3" in import_error(hf_models["gqa"], tmp_path / "out", tp=3)
    assert "--pp" in import_error(hf_models["gqa"], tmp_path / "out", pp=3)
    assert "vp" in import_error(hf_models["gqa"], tmp_path / "out", vp=2)  # VP needs PP > 1


def test_existing_output_is_refused_and_left_alone(tmp_path, hf_models, imported):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match="already exists"):
        import_hf(ImportOptions(input=hf_models["gqa"], output=output, progress=False))
    with pytest.raises(ConvertError, match="already exists"):
        export_hf(ExportOptions(input=imported["gqa"], output=output, progress=False))
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_failure_while_writing_leaves_no_output(tmp_path, hf_models, monkeypatch):
    real = HFWeights.read_rows
    calls = []

    def failing(self, name, *args, **kwargs):
        calls.append(name)
        if name == "model.layers.2.mlp.down_proj.weight":
            raise OSError("disk went away")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(HFWeights, "read_rows", failing)
    with pytest.raises(OSError, match="disk went away"):
        import_hf(ImportOptions(input=hf_models["gqa"], output=tmp_path / "out", tp=2, progress=False))
    assert "model.layers.1.mlp.down_proj.weight" in calls  # it was well under way
    assert_nothing_written(tmp_path / "out")


def test_export_errors(tmp_path, imported, tokenizers):
    with pytest.raises(ConvertError, match="496 pieces but the model's vocabulary is 512"):
        export_hf(ExportOptions(input=imported["gqa"], output=tmp_path / "a", tokenizer_model=tokenizers["base"],
                                progress=False))
    assert_nothing_written(tmp_path / "a")
    with pytest.raises(ConvertError, match="step 7 not found.*iter_0000007"):
        export_hf(ExportOptions(input=imported["gqa"], output=tmp_path / "b", step=7, progress=False))
    with pytest.raises(ConvertError, match="does not exist"):
        export_hf(ExportOptions(input=tmp_path / "nowhere", output=tmp_path / "c", progress=False))
    broken = tmp_path / "broken"
    shutil.copytree(imported["gqa"], broken)
    victim = sorted((broken / "iter_0000000").glob("*.distcp"))[3]
    victim.unlink()
    with pytest.raises(ConvertError, match=victim.name):
        export_hf(ExportOptions(input=broken, output=tmp_path / "d", progress=False))
    assert_nothing_written(tmp_path / "d")


def test_command_line_reports_errors_with_exit_code_2(tmp_path, hf_models):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), "hf-to-megacode",
                           "--input", str(hf_models["mha"]), "--output", str(tmp_path / "out"), "--flavor", "tiny"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "convert_checkpoint: error:" in done.stderr and "num_key_value_heads=4" in done.stderr
    assert_nothing_written(tmp_path / "out")


def test_checkpoint_from_another_config_schema_still_exports(tmp_path, imported):
    """A checkpoint outlives the schema it was saved with: unknown config keys are not fatal."""
    old = tmp_path / "old"
    shutil.copytree(imported["gqa"], old)
    path = old / "iter_0000000" / "common.pt"
    state = torch.load(path, weights_only=False)
    state["common"]["config"]["retired_section"] = {"knob": 1}
    torch.save(state, path)
    out = export_hf(ExportOptions(input=old, output=tmp_path / "nested" / "hf", progress=False))
    assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == 2
