"""Build-once cache for sample and blend indices.

An entry is a set of `.npy` arrays named `{kind}-{key}.{array}.npy` plus `{kind}-{key}.json`,
where `key` is the SHA-256 of the JSON description of everything the arrays depend on (format
version, dataset identity, split, seq_length, seed, number of samples, weights). Changing any
input changes the key, so a stale entry is never read; the JSON, written last, marks the entry
complete and lets a person see what an entry is.

Under torch.distributed, rank 0 builds a missing entry and the others load it after rank 0 says
it is done (a broadcast that doubles as the barrier and carries rank 0's error, if any, so a
failed build stops every rank instead of leaving them waiting). All ranks must call together,
and `cache_dir` must be on a filesystem they all see. Without torch.distributed (or with one
rank) the caller builds and loads alone. Writes go to temporary names and are renamed, so
concurrent jobs sharing a cache directory never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

FORMAT_VERSION = 1
"""Bump when the meaning or layout of any cached array changes (invalidates every entry)."""


class IndexCacheError(RuntimeError):
    """A cache entry could not be built, written or loaded; the message names the entry."""


def array_digest(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (for inputs such as a split's document ids)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed for a named part (e.g. ('train', 2)), stable across runs and machines."""
    text = "/".join([str(int(seed))] + [str(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def describe(description: dict) -> Tuple[dict, str]:
    """The description with the format version added, and its hash key."""
    full = {"format_version": FORMAT_VERSION, **description}
    text = json.dumps(full, sort_keys=True, default=_jsonable)
    return json.loads(text), hashlib.sha256(text.encode()).hexdigest()


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cache description holds a {type(value).__name__}: {value!r}")


class IndexCache:
    """One cache entry: `names` arrays of `kind` described by `description`."""

    def __init__(self, cache_dir: str, kind: str, description: dict, names: Sequence[str]) -> None:
        self.cache_dir = str(cache_dir)
        self.description, self.key = describe({"kind": kind, **description})
        self.stem = os.path.join(self.cache_dir, f"{kind}-{self.key[:32]}")
        self.names = list(names)

    def path(self, name: str) -> str:
        return f"{self.stem}.{name}.npy"

    @property
    def marker(self) -> str:
        return f"{self.stem}.json"

    def complete(self) -> bool:
        if not os.path.isfile(self.marker) or not all(os.path.isfile(self.path(n)) for n in self.names):
            return False
        try:
            with open(self.marker) as f:
                return json.load(f) == self.description
        except (OSError, ValueError):
            return False

    def save(self, arrays: Dict[str, np.ndarray]) -> None:
        os.makedirs(self.cache_dir, exist_ok=True)
        tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        written = []
        try:
            for name in self.names:
                tmp = self.path(name) + tag
                with open(tmp, "wb") as f:
                    np.save(f, np.asarray(arrays[name]), allow_pickle=False)
                written.append(tmp)
            for name, tmp in zip(self.names, written):
                os.replace(tmp, self.path(name))
            written = []
            tmp = self.marker + tag
            with open(tmp, "w") as f:
                json.dump(self.description, f, indent=1, sort_keys=True)
            os.replace(tmp, self.marker)
        finally:
            for tmp in written:
                if os.path.exists(tmp):
                    os.remove(tmp)

    def load(self) -> Dict[str, np.ndarray]:
        if not self.complete():
            raise IndexCacheError(f"{self.marker}: cache entry missing or incomplete (is {self.cache_dir} on a "
                                  f"filesystem every rank sees?)")
        try:
            return {n: np.load(self.path(n), mmap_mode="r", allow_pickle=False) for n in self.names}
        except (OSError, ValueError) as e:
            raise IndexCacheError(f"{self.stem}: cannot load cached indices: {e}") from e


def _distributed():
    """(rank, world size) when torch.distributed is initialized with several ranks, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return dist


def build_or_load(cache: IndexCache, build: Callable[[], Dict[str, np.ndarray]]) -> Tuple[Dict[str, np.ndarray], bool]:
    """The cached arrays (memory-mapped), building them first if needed; and whether it built.

    A collective under torch.distributed: rank 0 builds, every rank then loads.
    """
    dist = _distributed()
    built, error = False, None
    if dist is None or dist.get_rank() == 0:
        try:
            if not cache.complete():
                cache.save(build())
                built = True
        except Exception as e:  # reported to the other ranks below, then re-raised here
            error = e
    if dist is not None:
        # Doubles as the barrier. Rank 0's key travels too: a rank that sees the dataset under
        # another path or mtime would otherwise look for an entry nobody built.
        message = [None if error is None else f"{type(error).__name__}: {error}", cache.key, cache.description]
        dist.broadcast_object_list(message, src=0)
        if error is None and message[0] is not None:
            raise IndexCacheError(f"{cache.stem}: rank 0 failed to build the indices: {message[0]}")
        if message[1] != cache.key:
            differ = {k: (message[2].get(k), v) for k, v in cache.description.items() if message[2].get(k) != v}
            raise IndexCacheError(f"{cache.stem}: rank {dist.get_rank()} describes the indices differently from "
                                  f"rank 0 (rank 0 value, this rank's value): {differ}")
    if error is not None:
        raise error
    return cache.load(), built
