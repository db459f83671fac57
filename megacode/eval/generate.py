"""Batched text generation from a Hugging Face causal LM directory, with stop strings.

`TextGenerator` is the one interface evaluation and self-instruct call; `HFGenerator` is the
transformers implementation (any `AutoModelForCausalLM` directory, offline). Prompts are sorted
by length so batches carry little padding, padded on the left, and every sample of a prompt is
its own row, so sampling is independent per sample.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

from tqdm import tqdm

from megacode.config.schema import ConfigError

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """Decoding settings. Code Llama (Table 2 caption): greedy for pass@1; temperature 0.8, top-p 0.95 for
    pass@10 and pass@100."""

    max_new_tokens: int = 512
    """Longest completion, in tokens."""
    temperature: float = 0.0
    """0 = greedy decoding; > 0 = sampling at this temperature."""
    top_p: float = 0.95
    """Nucleus sampling mass (sampling only)."""
    num_samples: int = 1
    """Completions per prompt (the n of pass@k); greedy needs 1."""
    batch_size: int = 8
    """Sequences per forward batch (prompt copies for several samples count separately)."""
    seed: int = 0
    """Sampling seed; batch i uses seed + i."""
    dtype: str = "auto"
    """float32, bfloat16, float16, or auto (bfloat16 on CUDA, float32 on CPU)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)
        need(self.max_new_tokens >= 1, f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        need(self.temperature >= 0, f"generation.temperature must be >= 0, got {self.temperature}")
        need(0 < self.top_p <= 1, f"generation.top_p must be in (0, 1], got {self.top_p}")
        need(self.num_samples >= 1, f"generation.num_samples must be >= 1, got {self.num_samples}")
        need(self.batch_size >= 1, f"generation.batch_size must be >= 1, got {self.batch_size}")
        need(self.temperature > 0 or self.num_samples == 1,
             f"generation.num_samples={self.num_samples} with temperature 0 (greedy) gives identical samples; "
             "set generation.temperature > 0 (e.g. 0.8) for pass@k with k > 1")
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"),
             f"generation.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class TextGenerator(Protocol):
    """prompts -> for each prompt, `num_samples` completions, each cut before its first stop string."""

    def generate(self, prompts: Sequence[str], stop: Sequence[str], num_samples: int,
                 desc: str = "generate", seed: Optional[int] = None) -> list[list[str]]:
        """`seed` (default: the settings' seed) seeds this call's sampling; callers generating in
        chunks pass one per chunk, so a resumed run samples each chunk as the first run would."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the earliest occurrence of any stop string."""
    end = len(text)
    for marker in stop:
        at = text.find(marker)
        if 0 <= at < end:
            end = at
    return text[:end]


class HFGenerator:
    """`TextGenerator` over a transformers causal LM directory (config.json, weights, tokenizer)."""

    def __init__(self, model_dir: str | Path, settings: GenerationSettings):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json); "
                                    "a megacode checkpoint must be exported to HF first")
        self.settings = settings
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = settings.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"  # generation appends on the right of every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(self.device).eval()
        log.info("loaded %s on %s (%s)", model_dir, self.device, dtype)

    def with_settings(self, settings: GenerationSettings) -> "HFGenerator":
        """The same loaded model and tokenizer, decoding with other settings."""
        other = copy.copy(self)
        other.settings = settings
        return other

    def generate(self, prompts: Sequence[str], stop: Sequence[str], num_samples: Optional[int] = None,
                 desc: str = "generate", seed: Optional[int] = None) -> list[list[str]]:
        import torch

        n = num_samples or self.settings.num_samples
        lengths = [len(self.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
        rows = sorted(((i, j) for i in range(len(prompts)) for j in range(n)), key=lambda r: (lengths[r[0]], r))
        out: list[list[Optional[str]]] = [[None] * n for _ in prompts]
        size = self.settings.batch_size
        tokens, started = 0, time.monotonic()
        bar = tqdm(range(0, len(rows), size), desc=desc, unit="batch", leave=False)
        for batch_index, first in enumerate(bar):
            batch = rows[first:first + size]
            texts = [prompts[i] for i, _ in batch]
            torch.manual_seed((self.settings.seed if seed is None else seed) + batch_index)
            completions, new_tokens = self._batch(texts, stop)
            for (i, j), text in zip(batch, completions):
                out[i][j] = text
            tokens += new_tokens
            bar.set_postfix(tokens_per_s=f"{tokens / max(time.monotonic() - started, 1e-9):.0f}")
        return out  # type: ignore[return-value]

    def _batch(self, texts: list[str], stop: Sequence[str]) -> tuple[list[str], int]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        width = enc["input_ids"].shape[1]
        tokenizer = self.tokenizer

        class StopStrings(StoppingCriteria):
            """Per-row stop: a row is done once its new text holds a stop string."""

            def __call__(self, input_ids, scores, **kwargs):
                new = tokenizer.batch_decode(input_ids[:, width:], skip_special_tokens=True)
                return torch.tensor([any(s in t for s in stop) for t in new], device=input_ids.device)

        settings = self.settings
        sampling = {} if settings.greedy else {"temperature": settings.temperature, "top_p": settings.top_p}
        with torch.no_grad():
            output = self.model.generate(
                **enc, max_new_tokens=settings.max_new_tokens, do_sample=not settings.greedy, **sampling,
                stopping_criteria=StoppingCriteriaList([StopStrings()]) if stop else None,
                pad_token_id=tokenizer.pad_token_id)
        completions = []
        new_tokens = 0
        for row in range(output.shape[0]):
            prompt_ids = enc["input_ids"][row][enc["attention_mask"][row].bool()]
            new_ids = output[row, width:]  # finished rows are padded; decoding skips special tokens
            new_tokens += int((new_ids != tokenizer.pad_token_id).sum())
            completions.append(cut_at_stop(self._continuation(prompt_ids, new_ids), stop))
        return completions, new_tokens

    def _continuation(self, prompt_ids, new_ids) -> str:
        """Decode prompt+completion together and drop the prompt's text: decoding the new tokens
        alone loses SentencePiece's leading space, i.e. the indentation of a function body."""
        full = self.tokenizer.decode(list(prompt_ids) + list(new_ids), skip_special_tokens=True)
        head = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
        if full.startswith(head):
            return full[len(head):]
        return self.tokenizer.decode(list(new_ids), skip_special_tokens=True)
