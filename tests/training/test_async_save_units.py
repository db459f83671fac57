"""BackgroundSave without a running save (no processes): no collective unless a save is in flight
(and none while the step statistics say a writer still runs),
at most one in flight."""

import pytest
import torch.distributed as dist
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncRequest

from megacode.checkpoint.async_save import BackgroundSave
from megacode.config import ConfigError, load_config
from tests.training.launch import TINY_CONFIG


def _no_collectives(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a collective was called")

    for name in ("all_reduce", "barrier", "broadcast", "all_gather_object", "gather_object"):
        monkeypatch.setattr(dist, name, refuse)


def test_nothing_pending_means_no_collective(monkeypatch):
    _no_collectives(monkeypatch)
    saves = BackgroundSave()
    assert saves.pending is None
    assert saves.poll() is None and saves.wait() is None


def test_a_second_save_while_one_is_in_flight_is_refused(tmp_path, monkeypatch):
    _no_collectives(monkeypatch)
    saves = BackgroundSave()
    saves.start(AsyncRequest(None, (), []), tmp_path / "iter_0000001", lambda: None)  # nothing to write here
    assert saves.pending == tmp_path / "iter_0000001"
    with pytest.raises(RuntimeError, match="iter_0000001 is still being written"):
        saves.start(AsyncRequest(None, (), []), tmp_path / "iter_0000002", lambda: None)


def test_async_save_is_a_boolean_key():
    assert load_config(TINY_CONFIG, ["checkpoint.async_save=true"]).checkpoint.async_save is True
    assert load_config(TINY_CONFIG, []).checkpoint.async_save is False
    with pytest.raises(ConfigError, match="checkpoint.async_save must be bool, got 'sometimes'"):
        load_config(TINY_CONFIG, ["checkpoint.async_save=sometimes"])


def test_poll_with_the_step_count_decides_without_a_collective(tmp_path, monkeypatch):
    _no_collectives(monkeypatch)
    saves = BackgroundSave()
    saves.start(AsyncRequest(None, (), []), tmp_path / "iter_0000001", lambda: None)
    assert saves.poll(0) is None  # a count taken before this save started: the next step's counts it
    assert saves.writing_here() == 0  # this rank had nothing to write
    assert saves.poll(3) is None  # three ranks' writers still run
    assert saves.pending == tmp_path / "iter_0000001"
