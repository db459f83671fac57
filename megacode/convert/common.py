"""What both conversion directions share: the error type, dtype names, byte sizes, progress bars,
and output directories that appear under their final name only when complete.

A conversion writes into a hidden sibling `.NAME.partial-PID` of the requested output and
renames it at the end (same filesystem, so the rename is atomic). Any failure removes the
partial directory, so a crashed or refused conversion never leaves a directory that looks
finished. An output that already exists is refused rather than overwritten.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional

import torch

from megacode.checkpoint.tracker import fsync_dir


class ConvertError(ValueError):
    """Bad conversion input; the message names the file or value at fault."""


DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}

# Names Hugging Face writes into config.json (`torch_dtype` in 4.x, `dtype` in 5.x).
HF_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def parse_dtype(name: Optional[str], what: str) -> Optional[torch.dtype]:
    """`bf16`/`fp16`/`fp32` (or the long names) → torch dtype; None keeps the source dtype."""
    if name is None:
        return None
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ConvertError(f"{what}={name!r} is not a dtype; choose one of bf16, fp16, fp32") from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def parse_size(text: str | int, what: str) -> int:
    """'5GB' → 5·10⁹ bytes, '512MiB' → 512·2²⁰ (Hugging Face's `max_shard_size` convention)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ConvertError(f"{what}={text!r} is not a size like 5GB, 500MB or 2GiB")
    number, unit, binary = float(match.group(1)), match.group(2).upper(), bool(match.group(3))
    power = "KMGT".index(unit) + 1 if unit else 0
    size = int(number * (1024 if binary else 1000) ** power)
    if size <= 0:
        raise ConvertError(f"{what}={text!r} must be positive")
    return size


def nbytes(shape, dtype: torch.dtype) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * torch.empty((), dtype=dtype).element_size()


def progress_bar(total_bytes: int, desc: str, enabled: bool):
    """A tqdm bar counting bytes converted (stderr; silent when disabled)."""
    from tqdm import tqdm

    return tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def check_new_output(output: Path) -> None:
    if output.exists() or output.is_symlink():
        raise ConvertError(f"output directory {output} already exists; remove it or choose another --output")
    if output.parent.exists() and not output.parent.is_dir():
        raise ConvertError(f"parent of --output is not a directory: {output.parent}")


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """Yield a partial directory beside `output`; rename it to `output` if the block succeeds."""
    output = Path(output).absolute()
    check_new_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        yield partial
        check_new_output(output)  # someone else may have created it meanwhile
        os.rename(partial, output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    fsync_dir(output.parent)

