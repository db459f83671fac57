"""Checkpoint completeness and retention on real torch_dist checkpoint files (single process)."""

import json
import logging
import shutil

import pytest
import torch
import torch.distributed.checkpoint as dcp

from megacode.checkpoint.dist_ckpt import resolve_load_dir
from megacode.checkpoint.retention import plan, prune
from megacode.checkpoint.tracker import (COMPLETE_MARKER, check_shards, incomplete_reason, mark_complete, step_dir,
                                         write_tracker)


def make_checkpoint(root, step, marker=True):
    """A torch_dist checkpoint directory as Megatron writes it (shards, .metadata, common files)."""
    target = step_dir(root, step)
    target.mkdir(parents=True)
    dcp.save({"w": torch.full((64, 64), float(step)), "b": torch.arange(100.0)}, checkpoint_id=str(target),
             no_dist=True)
    (target / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    torch.save({"step": step}, target / "common.pt")
    if marker:
        problem, sizes = check_shards(target)
        assert problem is None
        mark_complete(target, step, 1, sizes)
    return target


def shard(target):
    return next(target.glob("*.distcp"))


def test_complete_checkpoint_passes_with_and_without_marker(tmp_path):
    assert incomplete_reason(make_checkpoint(tmp_path, 1)) is None
    assert incomplete_reason(make_checkpoint(tmp_path, 2, marker=False)) is None
    assert json.loads((step_dir(tmp_path, 1) / COMPLETE_MARKER).read_text())["step"] == 1


@pytest.mark.parametrize("marker", [True, False])
def test_truncated_or_missing_shard_is_incomplete_and_named(tmp_path, marker):
    target = make_checkpoint(tmp_path, 3, marker=marker)
    path = shard(target)
    path.write_bytes(path.read_bytes()[:100])
    assert str(path) in incomplete_reason(target) and "100 bytes" in incomplete_reason(target)
    path.unlink()
    assert incomplete_reason(target) == f"{path} is missing"


def test_directory_without_metadata_is_incomplete(tmp_path):
    target = make_checkpoint(tmp_path, 4, marker=False)
    (target / ".metadata").unlink()
    assert incomplete_reason(target) == f"{target / '.metadata'} is missing"


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path, caplog):
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4)
    bad = make_checkpoint(tmp_path, 6)
    write_tracker(tmp_path, 6)
    assert resolve_load_dir(tmp_path, None) == bad
    shard(bad).unlink()
    step_dir(tmp_path, 8).mkdir()  # a save that died right after creating its directory
    with caplog.at_level(logging.WARNING):
        assert resolve_load_dir(tmp_path, None) == step_dir(tmp_path, 4)
    assert "names step 6, which is incomplete" in caplog.text and "iter_0000008" in caplog.text
    with pytest.raises(FileNotFoundError, match="step 6 is not usable"):
        resolve_load_dir(tmp_path, 6)
    assert resolve_load_dir(tmp_path, 2) == step_dir(tmp_path, 2)


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    step_dir(tmp_path, 1).mkdir(parents=True)
    assert resolve_load_dir(tmp_path, None) is None
    assert resolve_load_dir(tmp_path / "missing", None) is None


def test_retention_keeps_last_k_and_every_nth(tmp_path):
    for step in range(1, 13):
        make_checkpoint(tmp_path, step)
    write_tracker(tmp_path, 12)
    shutil.rmtree(step_dir(tmp_path, 3))
    step_dir(tmp_path, 3).mkdir()  # an old save that died: garbage
    (tmp_path / ".trash_iter_0000001").mkdir()  # a deletion that died half-way
    done = prune(tmp_path, keep_last=2, keep_every=5)
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert left == ["iter_0000005", "iter_0000010", "iter_0000011", "iter_0000012"]
    assert done.delete_incomplete == [3]


def test_retention_never_deletes_the_only_good_checkpoint(tmp_path):
    make_checkpoint(tmp_path, 5)
    make_checkpoint(tmp_path, 7)
    write_tracker(tmp_path, 7)
    step_dir(tmp_path, 9).mkdir()  # newer and incomplete: not ours to judge
    assert plan(tmp_path, keep_last=1).keep == [7, 9]
    shard(step_dir(tmp_path, 7)).unlink()  # the latest went bad: delete nothing at all
    assert plan(tmp_path, keep_last=1).keep == [5, 7, 9]
    assert plan(tmp_path, keep_last=0).keep == [5, 7, 9]
