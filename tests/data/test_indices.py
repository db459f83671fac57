"""Sample indices: C++ builders against plain Python/NumPy references and Megatron-Core, PackedDataset
contents, determinism, and the cache (reuse, invalidation, rank 0 builds under torch.distributed)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from megatron.core.datasets import helpers as megatron_helpers

from megacode import _indices
from megacode.data import index_cache, indices
from megacode.data.gpt_dataset import PackedDataset, split_documents
from megacode.data.indexed import IndexedDataset, IndexedDatasetWriter

M64 = (1 << 64) - 1


class RefRng:
    """SplitMix64 stream (seed, stream) and Lemire bounded draws, as csrc/indices.cpp documents."""

    def __init__(self, seed, stream):
        self.state = (seed ^ (stream * 0xD1B54A32D192ED03)) & M64
        self.next()

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        m = self.next() * n
        if (m & M64) < n:
            threshold = ((1 << 64) - n) % n
            while (m & M64) < threshold:
                m = self.next() * n
        return m >> 64


def ref_permute(values, seed, stream):
    a = list(values)
    rng = RefRng(seed, stream)
    for i in range(len(a) - 1, 0, -1):
        j = rng.below(i + 1)
        a[i], a[j] = a[j], a[i]
    return np.array(a, dtype=np.int64)


def ref_sample_index(sizes, order, seq_length, num_samples):
    """Row i locates global token i * seq_length: the document holding it and the offset there."""
    lengths = sizes[order].astype(np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    positions = np.arange(num_samples + 1, dtype=np.int64) * seq_length
    k = np.searchsorted(ends, positions, side="right")
    return np.stack([k, positions - starts[k]], axis=1)


@pytest.mark.parametrize("seed", [0, 1, 1234, 2**63 + 5, 2**64 - 1])
def test_shuffles_match_reference(seed):
    for n in (0, 1, 2, 777):
        np.testing.assert_array_equal(indices.build_shuffle_index(n, seed), ref_permute(range(n), seed, 0))
    docs = np.random.default_rng(seed % 1000).choice(5000, size=300, replace=False)
    order = indices.build_document_order(docs, 3, seed)
    expected = np.concatenate([ref_permute(docs, seed, e + 1) for e in range(3)])
    np.testing.assert_array_equal(order, expected)
    assert order.dtype == np.int32
    with pytest.raises(ValueError, match="seed"):
        indices.build_shuffle_index(3, -1)


def test_sample_index_matches_numpy_reference():
    rng = np.random.default_rng(5)
    for trial in range(30):
        n = int(rng.integers(1, 400))
        sizes = rng.integers(0, 60, n).astype(np.int32)
        sizes[rng.integers(0, n)] = 7  # at least one token
        order = np.concatenate([rng.permutation(n) for _ in range(int(rng.integers(1, 4)))])
        total = int(sizes[order].sum())
        seq_length = int(rng.integers(1, 90))
        num_samples = int(rng.integers(0, (total - 1) // seq_length + 1))
        got = indices.build_sample_index(sizes, order, seq_length, num_samples)
        want = ref_sample_index(sizes, order, seq_length, num_samples)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")
        wide = _indices.build_sample_index_int64(sizes, order.astype(np.int64), seq_length, num_samples)
        assert wide.dtype == np.int64
        np.testing.assert_array_equal(wide, want)


def test_sample_index_matches_megatron_core():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 900, 5000).astype(np.int32)
    epochs, seq_length = 3, 512
    order = np.concatenate([rng.permutation(5000) for _ in range(epochs)]).astype(np.int32)
    tokens_per_epoch = int(sizes.sum())
    theirs = megatron_helpers.build_sample_idx(sizes, order, seq_length, epochs, tokens_per_epoch, True, True)
    num_samples = theirs.shape[0] - 1
    np.testing.assert_array_equal(indices.build_sample_index(sizes, order, seq_length, num_samples), theirs)


def test_sample_pieces_rebuild_the_token_stream():
    rng = np.random.default_rng(7)
    sizes = rng.integers(0, 30, 50).astype(np.int32)
    docs = [rng.integers(0, 1000, s) for s in sizes]
    order = np.concatenate([rng.permutation(50), rng.permutation(50)])
    stream = np.concatenate([docs[d] for d in order])
    seq_length = 16
    num_samples = (stream.size - 1) // seq_length
    index = indices.build_sample_index(sizes, order, seq_length, num_samples)
    cut = set()
    for i in range(num_samples):
        pieces = indices.sample_pieces(index, order, sizes, i)
        tokens = np.concatenate([docs[d][a:b] for d, a, b in pieces])
        np.testing.assert_array_equal(tokens, stream[i * seq_length:(i + 1) * seq_length + 1])
        assert all(0 <= a < b <= sizes[d] for d, a, b in pieces)
        cut.update(d for d, a, b in pieces if (a, b) != (0, sizes[d]))
    assert cut and len(cut) < 50  # some documents are cut across contexts, not all
    with pytest.raises(IndexError):
        indices.sample_pieces(index, order, sizes, num_samples)


def test_index_builders_reject_bad_input():
    sizes = np.array([3, 4], dtype=np.int32)
    with pytest.raises(ValueError, match="holds too few tokens"):
        indices.build_sample_index(sizes, np.array([0, 1]), 3, 3)
    with pytest.raises(ValueError, match="position 1 holds id 2, outside"):
        indices.build_sample_index(sizes, np.array([0, 2]), 2, 2)
    with pytest.raises(ValueError, match="document ids must be >= 0"):
        indices.build_document_order(np.array([0, -1]), 1, 0)
    with pytest.raises(ValueError, match="hold 0 tokens"):
        indices.num_epochs_needed(0, 8, 1)
    assert indices.num_epochs_needed(100, 10, 10) == 2  # 101 tokens needed


def write_dataset(prefix, rng, n=120, max_len=80, vocab=500):
    docs = [rng.integers(0, vocab, int(rng.integers(0, max_len))) for _ in range(n)]
    with IndexedDatasetWriter(prefix, np.uint16) as w:
        w.add_documents(np.concatenate(docs), [len(d) for d in docs])
    return docs


def test_packed_dataset_contents(tmp_path):
    rng = np.random.default_rng(8)
    docs = write_dataset(str(tmp_path / "d"), rng)
    train_docs, valid_docs = split_documents(len(docs), "90,10")
    assert (train_docs.size, valid_docs.size) == (108, 12)
    for n, split, sizes in [(20, "99,1", (19, 1)), (20, "1,99", (1, 19)), (20, "100,0", (20, 0)),
                            (20, "0,1", (0, 20)), (1, "99,1", (1, 0)), (0, "99,1", (0, 0))]:
        assert tuple(part.size for part in split_documents(n, split)) == sizes, (n, split)
    with pytest.raises(ValueError, match="split must be"):
        split_documents(10, "99")
    seq_length, num_samples = 32, 500  # needs several epochs of the 108 documents
    ds = PackedDataset(str(tmp_path / "d"), train_docs, seq_length, num_samples, seed=11, cache_dir=str(tmp_path / "c"))
    assert len(ds) == num_samples and ds.num_epochs >= 3
    n = train_docs.size
    for e in range(ds.num_epochs):
        np.testing.assert_array_equal(np.sort(ds.document_order[e * n:(e + 1) * n]), train_docs)
    np.testing.assert_array_equal(np.sort(ds.shuffle_index), np.arange(num_samples))
    stream = np.concatenate([docs[d] for d in ds.document_order])
    for i in range(num_samples):
        j = int(ds.shuffle_index[i])
        sample = ds[i]
        assert sample.dtype == np.int64 and sample.shape == (seq_length + 1,)
        np.testing.assert_array_equal(sample, stream[j * seq_length:(j + 1) * seq_length + 1])
    assert ds[-1].shape == (seq_length + 1,)
    with pytest.raises(IndexError):
        ds[num_samples]
    with pytest.raises(ValueError, match="split document id 120 outside"):
        PackedDataset(str(tmp_path / "d"), [0, 120], seq_length, 5, seed=1, cache_dir=str(tmp_path / "c"))


def test_packed_dataset_is_deterministic_from_the_seed(tmp_path):
    rng = np.random.default_rng(9)
    write_dataset(str(tmp_path / "d"), rng)
    docs = np.arange(100)
    a = PackedDataset(str(tmp_path / "d"), docs, 16, 300, seed=3, cache_dir=str(tmp_path / "c1"))
    b = PackedDataset(str(tmp_path / "d"), docs, 16, 300, seed=3, cache_dir=str(tmp_path / "c2"))
    c = PackedDataset(str(tmp_path / "d"), docs, 16, 300, seed=4, cache_dir=str(tmp_path / "c1"))
    assert a.built and b.built and c.built
    for name in ("document_order", "sample_index", "shuffle_index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.document_order, c.document_order)
    assert not np.array_equal(a.shuffle_index, c.shuffle_index)


def test_cache_reused_and_invalidated(tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    prefix, cache = str(tmp_path / "d"), str(tmp_path / "cache")
    write_dataset(prefix, rng)
    docs = np.arange(100)
    first = PackedDataset(prefix, docs, 16, 200, seed=1, cache_dir=cache)
    assert first.built
    entries = sorted(os.listdir(cache))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("index rebuilt although the cache holds it")

    with monkeypatch.context() as m:
        m.setattr(indices, "build_sample_index", no_rebuild)
        again = PackedDataset(prefix, docs, 16, 200, seed=1, cache_dir=cache)
    assert not again.built and sorted(os.listdir(cache)) == entries
    np.testing.assert_array_equal(again.sample_index, first.sample_index)
    assert isinstance(again.sample_index, np.memmap)

    changes = {
        "seed": dict(seed=2), "seq_length": dict(seq_length=17), "num_samples": dict(num_samples=201),
        "split": dict(split_docs=np.arange(1, 100)),
    }
    keys = {first.cache_key}
    for what, change in changes.items():
        args = {**dict(split_docs=docs, seq_length=16, num_samples=200, seed=1), **change}
        ds = PackedDataset(prefix, cache_dir=cache, **args)
        assert ds.built, what
        keys.add(ds.cache_key)
    with monkeypatch.context() as m:
        m.setattr(index_cache, "FORMAT_VERSION", index_cache.FORMAT_VERSION + 1)
        assert PackedDataset(prefix, docs, 16, 200, seed=1, cache_dir=cache).built
    os.remove(prefix + ".bin")  # a rewritten dataset (new size and mtime) gets new indices
    write_dataset(prefix, rng)
    rewritten = PackedDataset(prefix, docs, 16, 200, seed=1, cache_dir=cache)
    assert rewritten.built and rewritten.cache_key not in keys
    assert len(keys) == 5
    # An incomplete entry (no marker written) is rebuilt, not read.
    os.remove(rewritten.cache.marker)
    assert PackedDataset(prefix, docs, 16, 200, seed=1, cache_dir=cache).built


WORKER = """
import json, sys
import numpy as np
import torch.distributed as dist
from megacode.data import indices
from megacode.data.gpt_dataset import PackedDataset
dist.init_process_group("gloo")
rank = dist.get_rank()
prefix, cache = sys.argv[1], sys.argv[2]
real_build = indices.build_sample_index

def broken(*a, **k):
    raise RuntimeError("disk on fire")

def run(seed, cache_dir):
    try:
        ds = PackedDataset(prefix, np.arange(100), 16, 200, seed=seed, cache_dir=cache_dir)
        return {"built": ds.built, "digest": int(ds.sample_index.sum()) * 7 + int(ds.shuffle_index[:50].sum())}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}

out = {"ok": run(5, cache)}
out["mismatch"] = run(6 if rank == 1 else 5, cache)  # rank 1 disagrees about the seed
if rank == 0:
    indices.build_sample_index = broken
out["fail"] = run(7, cache)  # rank 0's build raises
print("RESULT " + json.dumps(out), flush=True)
dist.destroy_process_group()
"""


def test_rank0_builds_others_load(tmp_path):
    prefix = str(tmp_path / "d")
    write_dataset(prefix, np.random.default_rng(12))
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(script), prefix, str(tmp_path / "cache")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    r0, r1 = {}, {}
    for p, result in zip(procs, (r0, r1)):
        out, err = p.communicate(timeout=120)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert lines, err
        result.update(json.loads(lines[0][len("RESULT "):]))
    assert r0["ok"]["built"] and not r1["ok"]["built"] and r0["ok"]["digest"] == r1["ok"]["digest"]
    assert not r0["mismatch"]["built"]  # rank 0 found its entry from the first call
    assert "describes the indices differently from rank 0" in r1["mismatch"]["error"]
    assert "'seed': (5, 6)" in r1["mismatch"]["error"]
    assert "disk on fire" in r0["fail"]["error"]
    assert "rank 0 failed to build the indices" in r1["fail"]["error"] and "disk on fire" in r1["fail"]["error"]
