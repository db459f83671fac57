"""megacode checkpoint (any stage, any layout) → Hugging Face `LlamaForCausalLM` directory.

Output, as Code Llama's Hugging Face releases:

    config.json                       shapes, rope_theta (the run's RoPE base: 1e6 after long-context
                                      fine-tuning), max_position_embeddings, vocab without TP padding
    generation_config.json            BOS/EOS ids
    model-0000i-of-0000n.safetensors  weights, HF names, sharded by --max-shard-size
    model.safetensors.index.json      name → shard
    tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json

Only model weights are read (optimizer state and RNG states in the checkpoint are skipped), one
layer region at a time: HF tensors are cut from the stored `[L, ...]` tensors at layer l.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from megacode.config import ConfigError, RunConfig, model_shape, rope_base
from megacode.convert import hf_layout as hf
from megacode.convert import megatron_layout as mg
from megacode.convert.common import (
    HF_DTYPE_NAMES,
    ConvertError,
    check_new_output,
    parse_dtype,
    parse_size,
    progress_bar,
    staged_output,
)
from megacode.convert.dcp_io import CheckpointReader, read_megatron_common
from megacode.convert.safetensors_io import PlannedTensor, write_sharded
from megacode.convert.tokenizer_files import write_hf_tokenizer

log = logging.getLogger("megacode.convert")


@dataclass
class ExportOptions:
    input: Path
    """Checkpoint root (holding latest_checkpointed_iteration.txt) or one `iter_XXXXXXX/` directory."""
    output: Path
    """Hugging Face directory to create; must not exist."""
    tokenizer_model: Optional[Path] = None
    """SentencePiece model; None looks for INPUT/tokenizer.model, then the run's data.tokenizer_model."""
    step: Optional[int] = None
    """Export this step of a checkpoint root instead of the latest."""
    dtype: Optional[str] = None
    """Write weights as bf16/fp16/fp32; None keeps the checkpoint's dtype."""
    max_shard_size: str = "5GB"
    progress: bool = True
    torch_dtype: Optional[torch.dtype] = field(init=False)
    max_shard_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.input, self.output = Path(self.input), Path(self.output)
        self.torch_dtype = parse_dtype(self.dtype, "--dtype")
        self.max_shard_bytes = parse_size(self.max_shard_size, "--max-shard-size")


def resolve_checkpoint(path: Path, step: Optional[int]) -> tuple[Path, Path]:
    """(checkpoint root, iter directory) for a root (its tracker's step, or `step`) or an iter
    directory. Exactly that step is exported: an incomplete one is an error naming what is
    missing, never a silent fall-back to an older step."""
    from megacode.checkpoint.tracker import TRACKER_NAME, read_tracker, step_dir

    if not path.is_dir():
        raise ConvertError(f"checkpoint {path} does not exist")
    if (path / ".metadata").is_file() or (path / "common.pt").is_file():
        return path.parent, path
    if step is None:
        try:
            step = read_tracker(path)
        except ValueError as err:
            raise ConvertError(str(err)) from None
        if step is None:
            raise ConvertError(f"{path} holds no checkpoint (no {TRACKER_NAME}); pass a checkpoint root "
                               f"or an iter_XXXXXXX directory")
    target = step_dir(path, step)
    if not target.is_dir():
        raise ConvertError(f"checkpoint step {step} not found: {target} does not exist")
    return path, target


def stored_config(common: dict, ckpt: Path) -> RunConfig:
    """The run config saved with the checkpoint (leniently: megacode.checkpoint.preflight)."""
    from megacode.checkpoint.preflight import stored_run_config

    try:
        return stored_run_config(common.get("config"), f"{ckpt}/common.pt")
    except ConfigError as err:
        raise ConvertError(str(err)) from None


def _find_tokenizer(opts: ExportOptions, root: Path, cfg: RunConfig) -> Path:
    candidates = [opts.tokenizer_model] if opts.tokenizer_model else [root / "tokenizer.model", cfg.data.tokenizer_model]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    tried = ", ".join(str(c) for c in candidates if c)
    raise ConvertError(f"no tokenizer found (tried {tried}); pass --tokenizer-model FILE")


class _Regions:
    """Per-layer regions of the stored tensors, the last one kept: q, k and v (and gate and up)
    are consecutive HF tensors cut from one stored region."""

    def __init__(self, reader: CheckpointReader, shape: mg.MegatronShape) -> None:
        self.reader, self.shapes = reader, shape.global_shapes()
        self._last: tuple[Optional[tuple], Optional[torch.Tensor]] = (None, None)

    def layer(self, key: str, layer: int) -> torch.Tensor:
        if self._last[0] != (key, layer):
            self._last = (None, None)
            full = self.shapes[key]
            region = self.reader.read(key, (layer,) + (0,) * (len(full) - 1), (1,) + full[1:])[0]
            self._last = ((key, layer), region)
        return self._last[1]


def plan_tensors(reader: CheckpointReader, shape: mg.MegatronShape, dtype: Optional[torch.dtype]) -> list[PlannedTensor]:
    """Every HF tensor in HF's order, each produced from its stored region on demand."""
    m = shape.model
    regions = _Regions(reader, shape)
    f = m.ffn_hidden_size

    def out(key: str) -> torch.dtype:
        return dtype or reader.dtype(key)

    def vocab_rows(key: str):
        return lambda: reader.read(key, (0, 0), (m.vocab_size, m.hidden_size)).to(out(key))

    def qkv_part(layer: int, index: int):
        return lambda: hf.split_qkv(regions.layer(mg.QKV, layer), m)[index].reshape(-1, m.hidden_size).to(out(mg.QKV))

    def whole(key: str, layer: int, rows: slice = slice(None)):
        return lambda: regions.layer(key, layer)[rows].to(out(key)).contiguous()

    sources = {}
    for layer in range(m.num_layers):
        n = hf.layer_names(layer)
        sources.update({n["q"]: (mg.QKV, qkv_part(layer, 0)), n["k"]: (mg.QKV, qkv_part(layer, 1)),
                        n["v"]: (mg.QKV, qkv_part(layer, 2)), n["o"]: (mg.PROJ, whole(mg.PROJ, layer)),
                        n["gate"]: (mg.FC1, whole(mg.FC1, layer, slice(0, f))),
                        n["up"]: (mg.FC1, whole(mg.FC1, layer, slice(f, 2 * f))),
                        n["down"]: (mg.FC2, whole(mg.FC2, layer)),
                        n["input_norm"]: (mg.ATTN_NORM, whole(mg.ATTN_NORM, layer)),
                        n["post_norm"]: (mg.MLP_NORM, whole(mg.MLP_NORM, layer))})
    sources[hf.EMBED] = (mg.EMBED, vocab_rows(mg.EMBED))
    sources[hf.FINAL_NORM] = (mg.FINAL_NORM, lambda: reader.read(mg.FINAL_NORM).to(out(mg.FINAL_NORM)))
    sources[hf.LM_HEAD] = (mg.OUTPUT, vocab_rows(mg.OUTPUT))
    return [PlannedTensor(name, hf_shape, out(sources[name][0]), sources[name][1])
            for name, hf_shape in m.hf_shapes().items()]


def _model_shape(cfg: RunConfig, reader: CheckpointReader) -> mg.MegatronShape:
    try:
        flavor = model_shape(cfg)
    except ConfigError as err:
        raise ConvertError(f"{reader.dir}/common.pt: the stored model config does not resolve ({err})") from None
    vocab = flavor.vocab_size
    model = hf.ModelShape(flavor.num_layers, flavor.hidden_size, flavor.num_attention_heads,
                          flavor.num_query_groups, flavor.ffn_hidden_size, vocab)
    shape = mg.MegatronShape(model, reader.shape(mg.EMBED)[0])
    for key, want in shape.global_shapes().items():
        got = reader.shape(key)
        if got != want or shape.padded_vocab < vocab:
            raise ConvertError(f"{reader.dir}: {key} has shape {list(got)}, the run's config "
                               f"({flavor.describe()}) implies {list(want)}")
    return shape


def hf_config(cfg: RunConfig, shape: mg.MegatronShape, dtype: torch.dtype, bos: Optional[int], eos: Optional[int]) -> dict:
    flavor, m = model_shape(cfg), shape.model
    theta = rope_base(cfg, flavor)
    return {
        "architectures": [hf.HF_ARCHITECTURE], "model_type": "llama",
        "hidden_size": m.hidden_size, "intermediate_size": m.ffn_hidden_size, "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_groups, "head_dim": m.head_dim,
        "hidden_act": "silu", "rms_norm_eps": flavor.norm_epsilon, "vocab_size": m.vocab_size,
        # Longest context trained: the flavor's, or the run's sequence (16,384 after stage 3).
        "max_position_embeddings": max(flavor.max_position_embeddings, cfg.data.seq_length),
        # transformers 4.x reads rope_theta, 5.x rope_parameters: both, equal.
        "rope_theta": float(theta), "rope_parameters": {"rope_type": "default", "rope_theta": float(theta)},
        "tie_word_embeddings": False, "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "initializer_range": cfg.model.init_method_std, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": None,
        "torch_dtype": HF_DTYPE_NAMES[dtype], "dtype": HF_DTYPE_NAMES[dtype],
    }


def export_hf(opts: ExportOptions) -> Path:
    """Convert; returns the output directory. Raises ConvertError on bad input (nothing written)."""
    output = opts.output.absolute()
    check_new_output(output)
    root, ckpt = resolve_checkpoint(opts.input, opts.step)
    common = read_megatron_common(ckpt)
    cfg = stored_config(common, ckpt)
    reader = CheckpointReader(ckpt)
    shape = _model_shape(cfg, reader)
    tokenizer = _find_tokenizer(opts, root, cfg)
    tensors = plan_tensors(reader, shape, opts.torch_dtype)
    log.info("exporting %s (step %s, %s, layout %s) with tokenizer %s", ckpt, common.get("step"),
             cfg.model.flavor, common.get("layout"), tokenizer)
    with staged_output(output) as stage:
        max_length = max(model_shape(cfg).max_position_embeddings, cfg.data.seq_length)
        tok = write_hf_tokenizer(tokenizer, stage, shape.model.vocab_size, max_length)
        config = hf_config(cfg, shape, tensors[0].dtype, tok.bos_id, tok.eos_id)
        (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {"_from_model_config": True, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}
        (stage / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        with progress_bar(sum(t.nbytes for t in tensors), "megacode-to-hf", opts.progress) as bar:
            write_sharded(stage, tensors, opts.max_shard_bytes, on_tensor=bar.update)
    return output
