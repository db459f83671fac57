"""megacode's checkpoint files (Megatron `dist_checkpointing`, torch_dist backend) from a single
process, one tensor chunk at a time.

A torch_dist checkpoint directory is PyTorch Distributed Checkpoint (DCP) data plus two Megatron
files:
- `.metadata`: pickled DCP `Metadata`: per global key, the global shape, dtype and the list of
  stored chunks (offsets, sizes); per chunk, the file and byte range holding it;
- `__R_F.distcp`: the chunks, each a `torch.save`d tensor (sharded objects: pickled bytes);
- `metadata.json`: Megatron's backend names; `common.pt`: the non-sharded state (step, config).
Keys are global tensor names and chunks carry global offsets, so one process can write or read
every chunk that a TP×PP×DP job would; Megatron reshards at load time.

Writing goes through DCP's own planner and file writer (so DCP validates that the chunks tile
every tensor exactly), with data produced only when the writer asks for it and one file per
chunk: the writer keeps a reference to every tensor of the file it is writing until that file
is closed, so a file per chunk is what keeps memory at one chunk.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import save as dcp_save
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from megacode.convert.common import ConvertError, nbytes

COMMON_FILE = "common.pt"  # Megatron's COMMON_STATE_FNAME
CONFIG_FILE = "metadata.json"


@dataclass
class ChunkItem:
    """One stored chunk of global tensor `key`: `sizes` at `offsets`, made by `produce()`."""

    key: str
    global_shape: tuple[int, ...]
    dtype: torch.dtype
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    produce: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return nbytes(self.sizes, self.dtype)


@dataclass
class BytesItem:
    """A Megatron sharded object (already under its unique `key/shard_...` name)."""

    key: str
    produce: Callable[[], bytes]


class _LazySavePlanner(DefaultSavePlanner):
    """Plans the given chunks instead of walking a state dict; resolves data on demand."""

    def __init__(self, items: Sequence[ChunkItem | BytesItem], on_item: Callable[[int], None]) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._items = items
        self._on_item = on_item
        self._by_index = {}
        for item in items:
            index = (item.key, tuple(item.offsets)) if isinstance(item, ChunkItem) else (item.key, None)
            if index in self._by_index:
                raise ValueError(f"chunk {index} planned twice")
            self._by_index[index] = item

    def create_local_plan(self) -> SavePlan:
        write_items = []
        for item in self._items:
            if isinstance(item, BytesItem):
                write_items.append(WriteItem(index=MetadataIndex(item.key), type=WriteItemType.BYTE_IO))
                continue
            chunk = ChunkStorageMetadata(offsets=torch.Size(item.offsets), sizes=torch.Size(item.sizes))
            write_items.append(WriteItem(
                index=MetadataIndex(item.key, item.offsets), type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(chunk=chunk, properties=TensorProperties(dtype=item.dtype),
                                            size=torch.Size(item.global_shape))))
        self.plan = SavePlan(write_items)
        return self.plan

    def resolve_data(self, write_item: WriteItem):
        offset = tuple(write_item.index.offset) if write_item.index.offset is not None else None
        item = self._by_index[(write_item.index.fqn, offset)]
        if isinstance(item, BytesItem):
            return io.BytesIO(item.produce())
        tensor = item.produce()
        if tuple(tensor.shape) != tuple(item.sizes) or tensor.dtype != item.dtype:
            raise RuntimeError(f"{item.key} at {item.offsets}: produced {tensor.dtype} {list(tensor.shape)}, "
                               f"planned {item.dtype} {list(item.sizes)}")
        tensor = tensor.contiguous()
        if tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()  # a view would make the writer copy it, doubling the peak
        self._on_item(item.nbytes)
        return tensor


def write_chunks(ckpt_dir: Path, items: Sequence[ChunkItem | BytesItem],
                 on_item: Callable[[int], None] = lambda n: None) -> None:
    """Write `items` as one DCP checkpoint in `ckpt_dir` (which must exist), chunk by chunk."""
    writer = FileSystemWriter(str(ckpt_dir), single_file_per_rank=False, thread_count=1, sync_files=True)
    try:
        with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... single process"
            warnings.simplefilter("ignore", UserWarning)
            dcp_save({}, storage_writer=writer, planner=_LazySavePlanner(items, on_item), no_dist=True)
    except CheckpointException as wrapped:  # DCP wraps what a producer raised: hand that on as it was
        failures = list(wrapped.failures.values())
        if len(failures) == 1 and isinstance(failures[0][0], Exception):
            raise failures[0][0] from None
        raise


def write_megatron_files(ckpt_dir: Path, common: dict) -> None:
    """metadata.json (backend names) and common.pt, as Megatron's `dist_checkpointing.save` writes."""
    from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config

    save_config(CheckpointingConfig(sharded_backend="torch_dist"), str(ckpt_dir))
    torch.save({"common": common}, ckpt_dir / COMMON_FILE)


def read_megatron_common(ckpt_dir: Path) -> dict:
    path = Path(ckpt_dir) / COMMON_FILE
    if not (Path(ckpt_dir) / CONFIG_FILE).is_file() or not path.is_file():
        raise ConvertError(f"{ckpt_dir} is not a megacode checkpoint (no {CONFIG_FILE} / {COMMON_FILE})")
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: plain dicts and config
    if "common" not in state:
        raise ConvertError(f"{path}: no 'common' entry (not written by megacode)")
    return state["common"]


class _RegionPlanner(LoadPlanner):
    """Copies every read item into its place in one destination tensor (the requested region)."""

    def __init__(self, dest: torch.Tensor) -> None:
        self.dest = dest

    def set_up_planner(self, state_dict, metadata=None, is_coordinator=False) -> None:  # pragma: no cover
        pass

    def create_local_plan(self):  # pragma: no cover - plans are built directly
        raise NotImplementedError

    def create_global_plan(self, global_plan):  # pragma: no cover
        raise NotImplementedError

    def finish_plan(self, central_plan):  # pragma: no cover
        raise NotImplementedError

    def load_bytes(self, read_item, value) -> None:  # pragma: no cover - tensors only
        raise NotImplementedError

    def resolve_tensor(self, read_item) -> torch.Tensor:
        region = self.dest
        for dim, (start, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            region = region.narrow(dim, start, length)
        return region

    def commit_tensor(self, read_item, tensor) -> None:
        pass


class CheckpointReader:
    """Random access to the tensors of one megacode checkpoint directory (`iter_XXXXXXX/`)."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.dir = Path(ckpt_dir)
        if not (self.dir / ".metadata").is_file():
            raise ConvertError(f"{self.dir}: no .metadata file (not a torch_dist checkpoint, or incomplete)")
        self._reader = FileSystemReader(str(self.dir))
        self.metadata = self._reader.read_metadata()
        self._reader.set_up_storage_reader(self.metadata, True)
        missing = sorted({info.relative_path for info in self.metadata.storage_data.values()
                          if not (self.dir / info.relative_path).is_file()})
        if missing:
            raise ConvertError(f"{self.dir}: data file {self.dir / missing[0]} is missing "
                               f"({len(missing)} of the checkpoint's files are)")

    def tensor(self, key: str) -> TensorStorageMetadata:
        md = self.metadata.state_dict_metadata.get(key)
        if not isinstance(md, TensorStorageMetadata):
            raise ConvertError(f"{self.dir}: tensor {key} not found in the checkpoint")
        return md

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensor(key).size)

    def dtype(self, key: str) -> torch.dtype:
        return self.tensor(key).properties.dtype

    def read(self, key: str, offsets: Optional[Sequence[int]] = None, sizes: Optional[Sequence[int]] = None) -> torch.Tensor:
        """The region `sizes` at `offsets` of global tensor `key` (the whole tensor by default)."""
        md = self.tensor(key)
        offsets = tuple(offsets) if offsets is not None else (0,) * len(md.size)
        sizes = tuple(sizes) if sizes is not None else tuple(md.size)
        dest = torch.empty(sizes, dtype=md.properties.dtype)
        wanted = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes))
        items = create_read_items_for_chunk_list(key, md, [wanted])
        covered = sum(torch.Size(item.lengths).numel() for item in items)
        if covered != dest.numel():  # stored chunks never overlap, so a gap shows as a shortfall
            raise ConvertError(f"{self.dir}: stored chunks of {key} cover {covered} of the {dest.numel()} "
                               f"elements at offsets {list(offsets)} sizes {list(sizes)}")
        self._reader.read_data(LoadPlan(items), _RegionPlanner(dest)).wait()
        return dest
