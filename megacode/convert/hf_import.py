"""Hugging Face `LlamaForCausalLM` directory → megacode checkpoint ready for stage 1.

Output (a checkpoint root, as `megacode.train` writes one):

    OUT/latest_checkpointed_iteration.txt     "0"
    OUT/iter_0000000/                          torch_dist model weights, common.pt, metadata.json
    OUT/tokenizer.model                        Code Llama's tokenizer (when the input has one)
    OUT/model.yaml                             the `model:` section a run config needs for it

Load it with `checkpoint.load=OUT checkpoint.finetune=true` at the recorded layout or any other.
The shapes come from config.json: a registered flavor when one matches (`model.flavor`), else
`model.flavor: custom` with the shapes in `model.shape`; both are stored in the checkpoint's run
config and written to model.yaml, so a run, `tools/plan_run.py` and the export need nothing more.

Vocabulary: Llama 2 has 32,000 rows, Code Llama 32,016 (its 16 infilling pieces, DESIGN.md §1).
When the flavor's vocabulary is larger than the input's, the new rows of both the input embedding
and the output layer start as the mean of the existing rows: a new token then embeds like an
average token and gets an average logit, instead of random rows that would disturb the
pretrained distribution before training has seen the token. Rows past the vocabulary (padding to
a multiple of `model.make_vocab_size_divisible_by`) are zero; no token id reaches them, and
the export drops them. The tokenizer is extended with Code Llama's 16 pieces in the same step.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from megacode.config import (CUSTOM, ConfigError, Flavor, ModelConfig, ParallelConfig, RunConfig, ShapeConfig,
                             TrainConfig, model_shape, resolve_layout)
from megacode.convert import hf_layout as hf
from megacode.convert import megatron_layout as mg
from megacode.convert.common import ConvertError, parse_dtype, progress_bar, staged_output, check_new_output
from megacode.convert.dcp_io import BytesItem, ChunkItem, write_chunks, write_megatron_files
from megacode.convert.safetensors_io import HFWeights, unexpected

log = logging.getLogger("megacode.convert")
TOKENIZER_FILE = "tokenizer.model"
MODEL_YAML = "model.yaml"
CODELLAMA_NEW_PIECES = 16


@dataclass
class ImportOptions:
    input: Path
    """Hugging Face model directory (config.json, weights, optionally tokenizer.model)."""
    output: Path
    """Checkpoint root to create; must not exist."""
    tp: int = 1
    pp: int = 1
    vp: Optional[int] = None
    """Layout recorded in the checkpoint; its TP also sets how tensors are chunked on disk."""
    flavor: Optional[str] = None
    """Flavor name; None infers it from config.json (`custom` when none matches); `custom` keeps
    config.json's shapes even when a flavor matches."""
    dtype: Optional[str] = None
    """Store weights as bf16/fp16/fp32; None keeps the input's dtype (bit-exact)."""
    progress: bool = True
    parallel: ParallelConfig = field(init=False)
    torch_dtype: Optional[torch.dtype] = field(init=False)

    def __post_init__(self) -> None:
        self.input, self.output = Path(self.input), Path(self.output)
        try:
            self.parallel = ParallelConfig(tp=self.tp, pp=self.pp, vp=self.vp)
        except ConfigError as err:
            raise ConvertError(str(err).replace("parallel.", "--")) from None
        self.torch_dtype = parse_dtype(self.dtype, "--dtype")


def _check_weights(weights: HFWeights, shape: hf.ModelShape) -> None:
    expected = shape.hf_shapes()
    for name, want in expected.items():
        info = weights.tensors.get(name)
        if info is None:
            raise ConvertError(f"{weights.dir}: tensor {name} is missing from the weight files")
        if info.shape != want:
            raise ConvertError(f"{info.file}: tensor {name} has shape {list(info.shape)}, config.json implies {list(want)}")
    extra = unexpected(weights.tensors, set(expected), hf.IGNORED_SUFFIXES)
    if extra:
        where = weights.tensors[extra[0]].file
        raise ConvertError(f"{where}: unexpected tensor(s) {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''} "
                           f"(not part of a Llama 2 model: biases or another architecture?)")


def _model_config(hf_cfg: hf.HFLlamaConfig, flavor: Optional[Flavor]) -> ModelConfig:
    """A registered flavor (with config.json's layer count and θ), else config.json's shapes."""
    s = hf_cfg.shape
    if flavor is not None:
        return ModelConfig(flavor=flavor.name, rope_base=hf_cfg.rope_theta,
                           num_layers=None if s.num_layers == flavor.num_layers else s.num_layers)
    shape = ShapeConfig(num_layers=s.num_layers, hidden_size=s.hidden_size, num_attention_heads=s.num_heads,
                        num_query_groups=s.num_groups, ffn_hidden_size=s.ffn_hidden_size, vocab_size=s.vocab_size,
                        norm_epsilon=hf_cfg.rms_norm_eps, rope_base=hf_cfg.rope_theta,
                        max_position_embeddings=hf_cfg.max_position_embeddings)
    return ModelConfig(flavor=CUSTOM, shape=shape)


def model_section(model: ModelConfig) -> dict:
    """The keys of `model:` that differ from the defaults (what a run config must say)."""
    default = asdict(ModelConfig())
    section = {key: value for key, value in asdict(model).items() if value != default[key] or key == "flavor"}
    if "shape" in section:
        section["shape"] = {key: value for key, value in section["shape"].items() if value is not None}
    return section


def model_yaml(model: ModelConfig, source: Path) -> str:
    import yaml

    body = yaml.safe_dump({"model": model_section(model)}, sort_keys=False, default_flow_style=None, width=1 << 20)
    return (f"# The model section of a run config for this checkpoint (shapes from {source}/config.json).\n"
            f"# Copy it into the run's YAML file; a run whose model differs from the checkpoint's fails\n"
            f"# before launch.\n{body}")


def model_overrides(model: ModelConfig) -> list[str]:
    """The same section as `key=value` overrides for a command line (launch scripts)."""
    import yaml

    return [f"model.{key}=" + (yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20).strip()
                               if isinstance(value, dict) else str(value))
            for key, value in model_section(model).items()]


def _run_config(hf_cfg: hf.HFLlamaConfig, flavor: Optional[Flavor], opts: ImportOptions,
                tokenizer: Optional[Path]) -> RunConfig:
    cfg = RunConfig(model=_model_config(hf_cfg, flavor), parallel=opts.parallel)
    cfg.data.tokenizer_model = str(tokenizer) if tokenizer else None
    cfg.data.seq_length = hf_cfg.max_position_embeddings  # the context the weights were trained at
    # The layout checks need a batch; one that any pipeline can fill stands in for the real one.
    probe = replace(cfg, train=TrainConfig(global_batch_tokens=cfg.data.seq_length * opts.pp, micro_batch_size=1))
    try:
        resolve_layout(probe, opts.tp * opts.pp)
    except ConfigError as err:
        raise ConvertError(f"layout --tp {opts.tp} --pp {opts.pp} --vp {opts.vp} does not fit: {err}") from None
    return cfg


def _tokenizer_plan(model_dir: Path, hf_vocab: int, vocab: int) -> tuple[Optional[Path], bool]:
    """(source tokenizer.model or None, whether to append Code Llama's 16 pieces)."""
    source = model_dir / TOKENIZER_FILE
    grown = vocab - hf_vocab
    if not source.is_file():
        log.warning("%s has no %s: the checkpoint gets none (give the tokenizer to the training run)",
                    model_dir, TOKENIZER_FILE)
        return None, False
    from megacode.tokenizer import load

    pieces = load(source, backend="sentencepiece").vocab_size
    if pieces == vocab:
        return source, False
    if pieces == hf_vocab and grown == CODELLAMA_NEW_PIECES:
        return source, True
    raise ConvertError(f"{source} has {pieces} pieces; the model has {hf_vocab} rows and vocabulary {vocab} "
                       f"(only Code Llama's {CODELLAMA_NEW_PIECES} infilling pieces can be added)")


def _row_mean(weights: HFWeights, name: str, block: int = 1024) -> torch.Tensor:
    """Mean of all rows `[h]` in float64, read a block of rows at a time."""
    info = weights.info(name)
    total = torch.zeros(info.shape[1:], dtype=torch.float64)
    for start in range(0, info.shape[0], block):
        total += weights.read_rows(name, start, min(start + block, info.shape[0])).to(torch.float64).sum(0)
    return total / info.shape[0]


class _Producers:
    """Turns each planned chunk into a function that reads exactly its part of the HF tensors."""

    def __init__(self, weights: HFWeights, shape: mg.MegatronShape, tp: int, dtype: Optional[torch.dtype]) -> None:
        self.w, self.shape, self.tp = weights, shape, tp
        self._cached: tuple[Optional[str], Optional[torch.Tensor]] = (None, None)
        self._means: dict[str, torch.Tensor] = {}
        # One dtype per stored key: the requested one, or that of the HF tensor behind layer 0.
        first = hf.layer_names(0)
        source = {mg.EMBED: hf.EMBED, mg.OUTPUT: hf.LM_HEAD, mg.FINAL_NORM: hf.FINAL_NORM, mg.QKV: first["q"],
                  mg.PROJ: first["o"], mg.FC1: first["gate"], mg.FC2: first["down"],
                  mg.ATTN_NORM: first["input_norm"], mg.MLP_NORM: first["post_norm"]}
        self.key_dtype = {key: dtype or weights.info(name).dtype for key, name in source.items()}

    def _whole(self, name: str) -> torch.Tensor:
        """Whole tensor, cached: column chunks (o_proj, down_proj) are cut TP times from one read."""
        if self._cached[0] != name:
            self._cached = (None, None)
            self._cached = (name, self.w.read_rows(name))
        return self._cached[1]

    def _rows(self, name: str, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
        return self.w.read_rows(name, start, stop).to(dtype)

    def _vocab_rows(self, name: str, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
        """Rows of a padded, possibly grown vocabulary matrix: HF rows, then means, then zeros."""
        hf_vocab, vocab = self.w.info(name).shape[0], self.shape.model.vocab_size
        out = torch.zeros((stop - start, self.shape.model.hidden_size), dtype=dtype)
        if start < min(stop, hf_vocab):
            rows = out[: min(stop, hf_vocab) - start]
            if out.dtype == self.w.info(name).dtype:
                self.w.read_rows(name, start, min(stop, hf_vocab), out=rows)
            else:
                rows.copy_(self.w.read_rows(name, start, min(stop, hf_vocab)))
        lo, hi = max(start, hf_vocab), min(stop, vocab)
        if lo < hi:
            if name not in self._means:
                self._means[name] = _row_mean(self.w, name)
            out[lo - start: hi - start] = self._means[name].to(out.dtype)
        return out

    def __call__(self, chunk: mg.Chunk) -> Callable[[], torch.Tensor]:
        m, r, tp, dtype = self.shape.model, chunk.tp_rank, self.tp, self.key_dtype[chunk.key]
        if chunk.key in (mg.EMBED, mg.OUTPUT):
            name = hf.EMBED if chunk.key == mg.EMBED else hf.LM_HEAD
            return lambda: self._vocab_rows(name, chunk.offsets[0], chunk.offsets[0] + chunk.sizes[0], dtype)
        if chunk.key == mg.FINAL_NORM:
            return lambda: self._rows(hf.FINAL_NORM, 0, m.hidden_size, dtype)
        n = hf.layer_names(chunk.layer)
        if chunk.key == mg.QKV:
            groups = m.num_groups // tp  # this rank's query groups, whole
            q_rows, kv_rows = groups * m.heads_per_group * m.head_dim, groups * m.head_dim

            def qkv() -> torch.Tensor:
                q = self._rows(n["q"], r * q_rows, (r + 1) * q_rows, dtype)
                k = self._rows(n["k"], r * kv_rows, (r + 1) * kv_rows, dtype)
                v = self._rows(n["v"], r * kv_rows, (r + 1) * kv_rows, dtype)
                return hf.interleave_qkv(q, k, v, groups).unsqueeze(0)  # [1, (n+2g)·d/tp, h]
            return qkv
        if chunk.key in (mg.PROJ, mg.FC2):
            name = n["o"] if chunk.key == mg.PROJ else n["down"]
            start, width = chunk.offsets[2], chunk.sizes[2]
            return lambda: self._whole(name)[:, start:start + width].to(dtype).unsqueeze(0).clone()
        if chunk.key == mg.FC1:
            name = n[chunk.part]  # gate or up: this rank's rows of it
            rows = m.ffn_hidden_size // tp
            return lambda: self._rows(name, r * rows, (r + 1) * rows, dtype).unsqueeze(0)
        name = n["input_norm"] if chunk.key == mg.ATTN_NORM else n["post_norm"]
        return lambda: self._rows(name, 0, m.hidden_size, dtype).unsqueeze(0)


def plan_items(weights: HFWeights, shape: mg.MegatronShape, tp: int, dtype: Optional[torch.dtype]) -> list:
    """Every chunk and object of the checkpoint, ordered so HF tensors are read layer by layer."""
    produce = _Producers(weights, shape, tp, dtype)
    global_shapes = shape.global_shapes()
    by_layer: dict[Optional[int], list] = defaultdict(list)
    for key in mg.MODEL_KEYS:
        for chunk in shape.chunks(key, tp):
            by_layer[chunk.layer].append(ChunkItem(key, global_shapes[key], produce.key_dtype[key],
                                                   chunk.offsets, chunk.sizes, produce(chunk)))
    L = shape.model.num_layers
    items = [i for i in by_layer[None] if i.key == mg.EMBED]
    for layer in range(L):
        items += by_layer[layer]
        items += [BytesItem(mg.extra_state_key(module, layer, L), mg.extra_state_bytes)
                  for module in mg.EXTRA_STATE_MODULES]
    return items + [i for i in by_layer[None] if i.key != mg.EMBED]


def import_hf(opts: ImportOptions) -> Path:
    """Convert; returns the checkpoint root. Raises ConvertError on bad input (nothing written)."""
    from megacode.checkpoint.dist_ckpt import FORMAT_VERSION
    from megacode.checkpoint.tracker import step_dir, write_tracker
    from megacode.models.llama import padded_vocab_size

    output = opts.output.absolute()
    check_new_output(output)
    hf_cfg = hf.read_hf_config(opts.input)
    flavor = hf.match_flavor(hf_cfg, opts.flavor)
    weights = HFWeights(opts.input)
    _check_weights(weights, hf_cfg.shape)
    vocab = flavor.vocab_size if flavor is not None else hf_cfg.shape.vocab_size
    tokenizer_src, extend = _tokenizer_plan(opts.input, hf_cfg.shape.vocab_size, vocab)
    cfg = _run_config(hf_cfg, flavor, opts, output / TOKENIZER_FILE if tokenizer_src else None)
    try:
        target = model_shape(cfg)
        padded = padded_vocab_size(vocab, cfg.model.make_vocab_size_divisible_by, opts.tp)
    except ConfigError as err:
        raise ConvertError(f"{hf_cfg.path}, --tp {opts.tp}: {err}") from None
    model = replace(hf_cfg.shape, vocab_size=vocab)
    shape = mg.MegatronShape(model, padded)
    items = plan_items(weights, shape, opts.tp, opts.torch_dtype)
    log.info("importing %s as %s; HF vocab %d → %d, padded %d; at TP%d PP%d VP%d", opts.input, target.describe(),
             hf_cfg.shape.vocab_size, model.vocab_size, shape.padded_vocab, opts.tp, opts.pp, opts.vp or 1)
    common = {
        "format_version": FORMAT_VERSION, "step": 0, "consumed_train_samples": 0, "consumed_valid_samples": 0,
        "scheduler": None, "config": cfg.to_dict(),
        "layout": {"tp": opts.tp, "pp": opts.pp, "vp": opts.parallel.vp if (opts.vp or 1) > 1 else None, "dp": 1},
        "extra": {"hf_import": {"source": str(opts.input.absolute()), "hf_vocab_size": hf_cfg.shape.vocab_size,
                                "new_rows_init": "mean of existing rows", "padding_rows": "zero"}},
    }
    with staged_output(output) as stage:
        if tokenizer_src is not None and extend:
            from megacode.tokenizer import build_codellama_tokenizer

            build_codellama_tokenizer(tokenizer_src, stage / TOKENIZER_FILE, allow_non_llama_base=True)
        elif tokenizer_src is not None:
            shutil.copyfile(tokenizer_src, stage / TOKENIZER_FILE)
        ckpt = step_dir(stage, 0)
        ckpt.mkdir()
        total = sum(i.nbytes for i in items if isinstance(i, ChunkItem))
        with progress_bar(total, "hf-to-megacode", opts.progress) as bar:
            write_chunks(ckpt, items, on_item=bar.update)
        write_megatron_files(ckpt, common)
        (stage / MODEL_YAML).write_text(model_yaml(cfg.model, opts.input.absolute()))
        write_tracker(stage, 0)
    return output
