"""StepLoader: DALI and plain-Python batches bit-identical at 0/1/4 workers, prefetch, resume and
re-shard positions, token-range errors naming the file, backend selection, run data from a config."""

import logging

import numpy as np
import pytest
import torch

from megacode.config import ConfigError, Layout, load_config
from megacode.data import loader as loader_mod
from megacode.data.blend import BlendedDataset
from megacode.data.gpt_dataset import PackedDataset
from megacode.data.indexed import IndexedDatasetWriter
from megacode.data.loader import DaliCollator, StepLoader, resolve_backend
from megacode.data.provenance import TokenRangeError
from megacode.data.training_data import build_loaders
from megacode.data.batching import collate

SEQ = 24
VOCAB = 500


def layout(dp=1, mbs=2, gbs=16):
    return Layout(world_size=dp, tp=1, pp=1, vp=None, dp=dp, num_layers=4, global_batch_size=gbs,
                  micro_batch_size=mbs, num_microbatches=gbs // (mbs * dp))


def write(prefix, rng, n_docs, lo=3, hi=VOCAB, plant=None):
    """Random documents; `plant` = (document, offset, id) writes one chosen id."""
    lens = rng.integers(5, 60, n_docs)
    tokens = rng.integers(lo, hi, int(lens.sum()))
    if plant is not None:
        doc, offset, value = plant
        tokens[int(lens[:doc].sum()) + offset] = value
    with IndexedDatasetWriter(str(prefix), np.uint16) as w:
        w.add_documents(tokens, lens)
    return str(prefix)


@pytest.fixture(scope="module")
def blend(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(3)
    parts = [PackedDataset(write(tmp / f"d{k}", rng, 40 + 30 * k), np.arange(40 + 30 * k), SEQ, n, seed=k,
                           cache_dir=str(tmp / "cache")) for k, n in enumerate((256, 32, 32))]
    return BlendedDataset(parts, [0.8, 0.1, 0.1], 320, seed=9, cache_dir=str(tmp / "cache"))


def batches_of(ld, positions):
    return [ld.get(c) for c in positions]


def assert_same(a, b):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        assert len(step_a) == len(step_b)
        for ma, mb in zip(step_a, step_b):
            assert ma.keys() == mb.keys() == {"tokens", "labels", "loss_mask", "position_ids"}
            for k in ma:
                assert ma[k].dtype == mb[k].dtype and ma[k].shape == mb[k].shape, k
                assert torch.equal(ma[k], mb[k]), k


def test_dali_and_python_identical_at_every_worker_count(blend):
    positions = list(range(0, 320, 16))
    reference = batches_of(StepLoader(blend, layout(), backend="python", num_workers=0), positions)
    # The reference is the trainer's original collate of samples taken by global index.
    assert torch.equal(reference[3][1]["tokens"][0], torch.from_numpy(blend[3 * 16 + 2][:-1]))
    assert torch.equal(reference[3][1]["labels"][1], torch.from_numpy(blend[3 * 16 + 3][1:]))
    for backend in ("dali", "python"):
        for workers in (0, 1, 4):
            ld = StepLoader(blend, layout(), backend=backend, num_workers=workers, vocab_size=VOCAB)
            assert ld.backend == backend
            assert isinstance(ld.collator, DaliCollator) == (backend == "dali")
            assert_same(batches_of(ld, positions), reference)
            if workers:
                assert ld.stats["prefetched"] == len(positions) - 1  # every later step came from the background
            ld.close()


def test_dict_samples_with_loss_mask_identical():
    class Instruct:  # answers-only loss mask, as instruct data carries
        def __len__(self):
            return 64

        def __getitem__(self, i):
            rng = np.random.default_rng(i)
            return {"tokens": rng.integers(0, VOCAB, SEQ + 1), "loss_mask": (rng.random(SEQ + 1) < 0.5).astype(np.int8)}

    lay = layout(mbs=4)
    dali = StepLoader(Instruct(), lay, backend="dali", num_workers=2).get(16)
    plain = StepLoader(Instruct(), lay, backend="python", num_workers=0).get(16)
    assert_same([dali], [plain])
    want = collate([Instruct()[i] for i in range(16, 20)])["loss_mask"]
    assert torch.equal(dali[0]["loss_mask"], want) and 0 < want.sum() < want.numel()


def test_resume_and_jumps_read_the_uninterrupted_samples(blend):
    positions = list(range(0, 320, 16))
    full = batches_of(StepLoader(blend, layout(), backend="dali", num_workers=2), positions)
    # A run resumed from a checkpoint at consumed = 112 starts a fresh loader there.
    resumed = StepLoader(blend, layout(), backend="dali", num_workers=2)
    assert_same(batches_of(resumed, positions[7:]), full[7:])
    # Out-of-order positions (a mispredicted prefetch is dropped, never served).
    jumpy = StepLoader(blend, layout(), backend="python", num_workers=1)
    order = [5, 2, 3, 11, 0, 1]
    assert_same(batches_of(jumpy, [positions[k] for k in order]), [full[k] for k in order])
    assert jumpy.stats["prefetched"] == 2  # 3 right after 2, and 1 right after 0


def test_resharded_dp_ranks_cover_the_same_samples(blend):
    one = StepLoader(blend, layout(dp=1), backend="python", num_workers=0).get(64)
    rows = {}
    for rank in range(2):
        for m, batch in enumerate(StepLoader(blend, layout(dp=2), rank, backend="dali", num_workers=2).get(64)):
            for r in range(2):
                rows[64 + m * 4 + rank * 2 + r] = batch["tokens"][r]  # consumed + m·(mbs·dp) + dp_rank·mbs + r
    full = torch.cat([b["tokens"] for b in one])  # DP 1: samples 64..79 in order
    assert sorted(rows) == list(range(64, 80))
    assert torch.equal(torch.stack([rows[i] for i in range(64, 80)]), full)


def test_token_outside_vocabulary_names_file_document_offset(tmp_path):
    rng = np.random.default_rng(5)
    prefix = write(tmp_path / "wide", rng, 30, hi=VOCAB, plant=(7, 3, 40000))
    ds = PackedDataset(prefix, np.arange(30), SEQ, 40, seed=1, cache_dir=str(tmp_path / "c"))
    hit = next(i for i in range(len(ds)) if any(d == 7 and s <= 3 < e for d, s, e in ds.pieces(i)))
    step = hit // 16 * 16
    ok = StepLoader(ds, layout(), backend="python", num_workers=0, vocab_size=65536)
    assert ok.get(step)  # a large enough vocabulary reads the same sample
    for workers in (0, 2):  # error raised in the caller and from the background threads alike
        ld = StepLoader(ds, layout(), backend="dali", num_workers=workers, vocab_size=VOCAB)
        with pytest.raises(TokenRangeError) as err:
            ld.get(step)
        message = str(err.value)
        assert "token id 40000" in message and f"[0, {VOCAB})" in message
        assert f"{prefix} (.bin/.idx) document 7 token offset 3" in message


def test_backend_selection(monkeypatch):
    assert resolve_backend("auto") == "dali" and resolve_backend("python") == "python"
    monkeypatch.setattr(loader_mod, "_DALI_IMPORT_ERROR", "ModuleNotFoundError: No module named 'nvidia'")
    assert resolve_backend("auto") == "python"  # the fallback when DALI is not importable
    with pytest.raises(ImportError, match=r"pip install \.\[data-gpu\]"):
        resolve_backend("dali")
    with pytest.raises(ValueError, match="data.loader must be one of"):
        resolve_backend("torch")


def run_config(tmp_path, *overrides):
    cfg = load_config(None, ["model.flavor=tiny", f"data.seq_length={SEQ}", "train.iters=4",
                             f"train.global_batch_tokens={16 * SEQ}", "train.micro_batch_size=2",
                             "train.eval_interval=2", "train.eval_iters=2", f"data.cache_dir={tmp_path / 'c'}",
                             *overrides])
    return cfg, layout()


def test_run_loaders_from_config(tmp_path, caplog):
    rng = np.random.default_rng(8)
    a, b = write(tmp_path / "a", rng, 50), write(tmp_path / "b", rng, 50)
    paths = f"data.paths=[{{path: {a}, weight: 0.85}}, {{path: {b}, weight: 0.15}}]"
    train, valid = build_loaders(*run_config(tmp_path, paths, "data.split=90,10"), 0, torch.device("cpu"))
    assert len(train) == 64 and len(valid) == 32 and train.vocab_size == 512
    assert valid.next_position(16) == 0  # evaluation re-reads [0, eval_iters x batch): prefetch wraps
    with caplog.at_level(logging.WARNING, logger="megacode"):
        train, valid = build_loaders(*run_config(tmp_path, paths, "data.split=100,0"), 0, torch.device("cpu"))
    assert valid is None and len(train.get(0)) == 8
    assert [r.message for r in caplog.records if "validation" in r.message] == [
        "no validation data (data.valid_paths is empty and data.split='100,0' leaves no validation documents): "
        "validation skipped"]
    cfg, lay = run_config(tmp_path, paths, "data.vocab_size=300")  # ids up to 499 do not fit
    with pytest.raises(TokenRangeError, match=r"outside the model vocabulary \[0, 300\)"):
        build_loaders(cfg, lay, 0, torch.device("cpu"))[0].get(0)


def test_tokenizer_larger_than_model_vocab_is_a_config_error(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from spm_fixtures import tiny_model

    rng = np.random.default_rng(8)
    a = write(tmp_path / "a", rng, 20)
    cfg, lay = run_config(tmp_path, f"data.paths=[{{path: {a}}}]", f"data.tokenizer_model={tiny_model()}")
    with pytest.raises(ConfigError, match="has 2000 pieces but the model vocabulary is 512"):
        build_loaders(cfg, lay, 0, torch.device("cpu"))


def test_read_batch_equals_samples(tmp_path, blend):
    """The C++ gather (PackedDataset / BlendedDataset.read_batch) gives exactly dataset[i] per row,
    for every token file dtype it reads, with empty documents and several epochs; the loader's
    batches from it equal batches collated sample by sample."""
    rng = np.random.default_rng(11)
    lens = rng.integers(0, 40, 60)  # empty documents too
    tokens = rng.integers(0, 70_000, int(lens.sum()))
    for dtype in (np.uint16, np.int32, np.int64):
        prefix = str(tmp_path / f"t_{np.dtype(dtype).name}")
        with IndexedDatasetWriter(prefix, dtype) as w:
            w.add_documents(tokens.astype(dtype), lens)
        ds = PackedDataset(prefix, np.arange(60), SEQ, 200, seed=4, cache_dir=str(tmp_path / "c"))  # > 1 epoch
        assert ds.num_epochs > 1 and ds.can_read_batch
        ids = rng.permutation(len(ds))[:150]
        assert np.array_equal(ds.read_batch(ids), np.stack([ds[i] for i in ids]))
        with pytest.raises(IndexError, match=r"sample 200 out of range \[0, 200\)"):
            ds.read_batch([3, 200])
    ids = rng.permutation(len(blend))
    assert blend.can_read_batch and np.array_equal(blend.read_batch(ids), np.stack([blend[i] for i in ids]))

    class PerSample:  # the same samples without read_batch: the loader's other path
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            return self.ds[i]

    for workers in (0, 2):
        fast = StepLoader(blend, layout(), backend="python", num_workers=workers)
        slow = StepLoader(PerSample(blend), layout(), backend="python", num_workers=workers)
        assert fast._batched and not slow._batched
        assert_same(batches_of(fast, [0, 16, 48]), batches_of(slow, [0, 16, 48]))
