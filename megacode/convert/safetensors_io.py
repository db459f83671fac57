"""Hugging Face weight files, read and written one tensor at a time.

Reading: a model directory holds `model.safetensors`, or shards listed in
`model.safetensors.index.json` (or the older `pytorch_model*.bin` pickles). Safetensors files
are read with plain positioned reads (`os.pread`) of just the rows asked for, not memory-mapped:
touched pages of a mapping count in the process's resident set until unmapped, which would make
a streaming conversion of a 70B model look (and, under cgroup limits, act) like it holds it all.

Writing: safetensors puts a JSON header (every tensor's dtype, shape and byte range) before the
data, so a shard's header is written from the planned shapes and then each tensor's bytes are
streamed in order. Format: 8-byte little-endian header length N, N bytes of JSON (padded with
spaces to a multiple of 8), then the raw little-endian tensor data.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from megacode.convert.common import ConvertError, nbytes

ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
ST_NAMES = {dtype: name for name, dtype in ST_DTYPES.items()}
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class StoredTensor:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: Optional[int] = None
    """Absolute byte offset of the data in a safetensors file; None for a .bin pickle."""


def _read_header(path: Path) -> dict[str, StoredTensor]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise ConvertError(f"{path}: truncated safetensors file (no header)")
            (length,) = struct.unpack("<Q", raw)
            if length > 100_000_000:
                raise ConvertError(f"{path}: safetensors header of {length} bytes is not plausible")
            header = json.loads(handle.read(length))
            size = os.fstat(handle.fileno()).st_size
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConvertError(f"{path}: cannot read safetensors header ({err})") from None
    header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in ST_DTYPES:
            raise ConvertError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        dtype, shape = ST_DTYPES[info["dtype"]], tuple(info["shape"])
        if end - start != nbytes(shape, dtype) or 8 + length + end > size:
            raise ConvertError(f"{path}: tensor {name} ({info['dtype']} {list(shape)}) lies outside the file "
                               f"or has the wrong byte length (is the file truncated?)")
        tensors[name] = StoredTensor(path, dtype, shape, 8 + length + start)
    return tensors


class HFWeights:
    """Every weight of an HF model directory, by name, readable without loading the rest."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = Path(model_dir)
        self.tensors: dict[str, StoredTensor] = {}
        self._bin_cache: tuple[Optional[Path], dict] = (None, {})
        if (self.dir / SAFETENSORS_INDEX).is_file():
            for shard in self._index_shards(self.dir / SAFETENSORS_INDEX):
                self.tensors.update(_read_header(shard))
        elif (self.dir / "model.safetensors").is_file():
            self.tensors.update(_read_header(self.dir / "model.safetensors"))
        elif (self.dir / BIN_INDEX).is_file() or (self.dir / "pytorch_model.bin").is_file():
            shards = (self._index_shards(self.dir / BIN_INDEX) if (self.dir / BIN_INDEX).is_file()
                      else [self.dir / "pytorch_model.bin"])
            for shard in shards:
                for name, tensor in self._load_bin(shard).items():
                    self.tensors[name] = StoredTensor(shard, tensor.dtype, tuple(tensor.shape))
        else:
            raise ConvertError(f"{self.dir}: no weights found (expected {SAFETENSORS_INDEX}, model.safetensors, "
                               f"{BIN_INDEX} or pytorch_model.bin)")

    def _index_shards(self, index: Path) -> list[Path]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ConvertError(f"{index}: not a weight index ({err})") from None
        shards = sorted(set(weight_map.values()))
        for name in shards:
            if not (self.dir / name).is_file():
                listed = sorted(k for k, v in weight_map.items() if v == name)
                raise ConvertError(f"shard {self.dir / name} is missing (listed in {index.name} for "
                                   f"{len(listed)} tensors, e.g. {listed[0]})")
        return [self.dir / name for name in shards]

    def _load_bin(self, shard: Path) -> dict:
        if self._bin_cache[0] != shard:  # one pickle shard mapped at a time
            self._bin_cache = (None, {})
            try:
                self._bin_cache = (shard, torch.load(shard, map_location="cpu", mmap=True, weights_only=True))
            except Exception as err:  # torch raises several kinds for a bad pickle
                raise ConvertError(f"{shard}: cannot load ({err})") from None
        return self._bin_cache[1]

    def info(self, name: str) -> StoredTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise ConvertError(f"{self.dir}: tensor {name} not found in the weight files") from None

    def read_rows(self, name: str, start: int = 0, stop: Optional[int] = None,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rows `[start, stop)` along dim 0 (the whole tensor by default), into `out` if given
        (a contiguous tensor of the stored dtype and the rows' shape) or a new tensor."""
        info = self.info(name)
        stop = info.shape[0] if stop is None else stop
        row_shape = info.shape[1:]
        if out is None:
            out = torch.empty((stop - start,) + row_shape, dtype=info.dtype)
        elif tuple(out.shape) != (stop - start,) + row_shape or out.dtype != info.dtype or not out.is_contiguous():
            raise ValueError(f"{name}: rows {start}:{stop} do not fit {out.dtype} {list(out.shape)}")
        if info.begin is None:
            return out.copy_(self._load_bin(info.file)[name][start:stop])
        row_bytes = nbytes(row_shape, info.dtype)
        view = memoryview(out.view(torch.uint8).numpy()).cast("B") if out.numel() else memoryview(b"")
        fd = os.open(info.file, os.O_RDONLY)
        try:
            done, offset = 0, info.begin + start * row_bytes
            while done < len(view):
                got = os.preadv(fd, [view[done:]], offset + done)
                if got <= 0:
                    raise ConvertError(f"{info.file}: unexpected end of file reading {name}")
                done += got
        finally:
            os.close(fd)
        return out


@dataclass
class PlannedTensor:
    """One tensor of the output: its name, shape and dtype up front, its data on demand."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return nbytes(self.shape, self.dtype)


def plan_shards(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Consecutive groups under `max_shard_bytes` (a larger tensor gets a shard of its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def write_safetensors(path: Path, tensors: list[PlannedTensor], on_tensor: Callable[[int], None]) -> None:
    """One safetensors file: header from the plan, then each tensor produced, checked, written."""
    header, offset = {}, 0
    for t in tensors:
        header[t.name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        for t in tensors:
            data = t.produce()
            if tuple(data.shape) != t.shape or data.dtype != t.dtype:
                raise RuntimeError(f"{t.name}: produced {data.dtype} {list(data.shape)}, planned {t.dtype} {list(t.shape)}")
            data = data.contiguous()
            handle.write(memoryview(data.view(torch.uint8).numpy()) if data.numel() else b"")
            on_tensor(t.nbytes)
            del data
        handle.flush()
        os.fsync(handle.fileno())


def write_sharded(out_dir: Path, tensors: list[PlannedTensor], max_shard_bytes: int,
                  on_tensor: Callable[[int], None] = lambda n: None) -> list[Path]:
    """HF's sharded layout: `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`."""
    shards = plan_shards(tensors, max_shard_bytes)
    weight_map, paths = {}, []
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(out_dir / name, shard, on_tensor)
        weight_map.update({t.name: name for t in shard})
        paths.append(out_dir / name)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors),
                          "total_parameters": sum(t.nbytes // t.dtype.itemsize for t in tensors)},
             "weight_map": weight_map}
    (out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return paths


def unexpected(names: Iterable[str], expected: set[str], ignored_suffixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n not in expected and not n.endswith(ignored_suffixes))
