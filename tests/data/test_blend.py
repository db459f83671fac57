"""Blending: index against a plain NumPy reference, proportions, BlendedDataset and build_datasets."""

import os

import numpy as np
import pytest

from megacode.config.schema import DataConfig
from megacode.data import indices
from megacode.data.blend import BlendedDataset
from megacode.data.builder import build_datasets
from megacode.data.gpt_dataset import PackedDataset
from megacode.data.indexed import IndexedDatasetWriter


def ref_blend(weights, n):
    """Sample s goes to the dataset furthest below weight * (s + 1); ties to the lowest index."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    taken = np.zeros(len(w), dtype=np.int64)
    dataset, within = np.empty(n, np.int16), np.empty(n, np.int64)
    for s in range(n):
        d = int(np.argmax(w * (s + 1) - taken))
        dataset[s], within[s] = d, taken[d]
        taken[d] += 1
    return dataset, within


def test_blend_index_matches_reference_and_weights():
    rng = np.random.default_rng(20)
    cases = [[0.85, 0.08, 0.07], [0.75, 0.10, 0.10, 0.05], [1.0], [3, 1]]
    cases += [list(rng.uniform(0.01, 1.0, int(rng.integers(2, 14)))) for _ in range(12)]  # > 8: generic loop
    for weights in cases:
        n = int(rng.integers(1, 3000))
        dataset, within = indices.build_blend_index(weights, n)
        want_dataset, want_within = ref_blend(weights, n)
        np.testing.assert_array_equal(dataset, want_dataset)
        np.testing.assert_array_equal(within, want_within)
        # Every prefix holds each dataset within one sample of its share.
        w = np.asarray(weights) / np.sum(weights)
        counts = np.stack([np.cumsum(dataset == d) for d in range(len(w))], axis=1)
        shares = np.arange(1, n + 1)[:, None] * w[None, :]
        assert np.abs(counts - shares).max() <= 1.0 + 1e-9
        np.testing.assert_array_equal(indices.blend_counts(weights, n), counts[-1])
    dataset, _ = indices.build_blend_index([0.85, 0.08, 0.07], 100_000)
    got = np.bincount(dataset) / 100_000
    assert np.all(np.abs(got - [0.85, 0.08, 0.07]) < 0.01 * np.array([0.85, 0.08, 0.07]))
    for bad in ([], [1.0, 0.0], [1.0, -2.0], [float("nan")]):
        with pytest.raises(ValueError, match="blend weights"):
            indices.build_blend_index(bad, 10)


def write(prefix, rng, n_docs, vocab_lo, vocab_hi):
    lens = rng.integers(1, 120, n_docs)
    with IndexedDatasetWriter(prefix, np.uint16) as w:
        w.add_documents(rng.integers(vocab_lo, vocab_hi, int(lens.sum())), lens)
    return prefix


@pytest.fixture
def three_datasets(tmp_path):
    rng = np.random.default_rng(21)
    # Disjoint token ranges tell the datasets apart inside a blended sample.
    return [write(str(tmp_path / name), rng, 200, lo, lo + 1000)
            for name, lo in (("code", 0), ("nl_code", 1000), ("nl", 2000))]


def test_blended_dataset_samples_and_cache(three_datasets, tmp_path):
    cache = str(tmp_path / "cache")
    weights = [0.85, 0.08, 0.07]
    n = 2000
    counts = indices.blend_counts(weights, n)
    parts = [PackedDataset(p, np.arange(200), 32, int(c), seed=k, cache_dir=cache)
             for k, (p, c) in enumerate(zip(three_datasets, counts))]
    blend = BlendedDataset(parts, weights, n, seed=0)
    assert blend.built and len(blend) == n
    sources = np.array([blend.source(i)[0] for i in range(n)])
    np.testing.assert_array_equal(np.bincount(sources), counts)
    for i in range(0, n, 7):
        d, j = blend.source(i)
        sample = blend[i]
        np.testing.assert_array_equal(sample, parts[d][j])
        assert sample.min() >= 1000 * d and sample.max() < 1000 * (d + 1)
        assert blend.pieces(i) == parts[d].pieces(j)
    again = BlendedDataset(parts, weights, n, seed=0)
    assert not again.built
    assert BlendedDataset(parts, [0.84, 0.08, 0.08], 1500, seed=0).built  # other weights or size: rebuilt
    with pytest.raises(ValueError, match=r"takes 1020 from dataset 1 .* holds only 160"):
        BlendedDataset(parts, [0.4, 0.51, 0.09], n, seed=0)
    with pytest.raises(ValueError, match="one weight per dataset"):
        BlendedDataset(parts, [1.0], n, seed=0)


def test_build_datasets_split_and_blend(three_datasets, tmp_path):
    cfg = DataConfig(seq_length=32, split="95,5", cache_dir=str(tmp_path / "cache"),
                     paths=[{"path": p, "weight": w} for p, w in zip(three_datasets, [0.85, 0.08, 0.07])])
    train, valid = build_datasets(cfg, seed=1234, num_train_samples=3000, num_valid_samples=60)
    assert isinstance(train, BlendedDataset) and isinstance(valid, BlendedDataset)
    assert len(train) == 3000 and len(valid) == 60
    np.testing.assert_array_equal([p.num_samples for p in train.datasets], [2550, 240, 210])
    for part in train.datasets:
        np.testing.assert_array_equal(part.split_docs, np.arange(190))
    for part in valid.datasets:
        np.testing.assert_array_equal(part.split_docs, np.arange(190, 200))
    # Train and valid never share a document.
    for i in range(0, 3000, 50):
        assert all(doc < 190 for doc, _, _ in train.pieces(i))
    for i in range(60):
        assert all(doc >= 190 for doc, _, _ in valid.pieces(i))
    # Same config and seed: everything comes from the cache, samples identical.
    train2, _ = build_datasets(cfg, 1234, 3000, 60)
    assert not train2.built and not any(p.built for p in train2.datasets)
    for i in range(0, 3000, 101):
        np.testing.assert_array_equal(train[i], train2[i])
    train3, _ = build_datasets(cfg, seed=99, num_train_samples=3000, num_valid_samples=60)
    assert train3.built or any(p.built for p in train3.datasets)
    assert any(not np.array_equal(train[i], train3[i]) for i in range(10))


def test_build_datasets_single_path_valid_paths_and_synthetic(three_datasets, tmp_path):
    assert build_datasets(DataConfig(seq_length=16), 1, 10, 10) == (None, None)
    cfg = DataConfig(seq_length=16, paths=[{"path": three_datasets[0]}],
                     valid_paths=[{"path": three_datasets[2]}])
    train, valid = build_datasets(cfg, seed=1, num_train_samples=100, num_valid_samples=20)
    assert isinstance(train, PackedDataset) and isinstance(valid, PackedDataset)
    assert train.split_docs.size == 200 and valid.indexed.prefix == three_datasets[2]
    assert os.path.isdir(os.path.join(os.path.dirname(three_datasets[0]), "index-cache"))
    _, none = build_datasets(cfg, seed=1, num_train_samples=100, num_valid_samples=0)
    assert none is None
    with pytest.raises(ValueError, match="leaves no training documents"):
        build_datasets(DataConfig(seq_length=16, split="0,1", paths=[{"path": three_datasets[0]}]), 1, 10, 0)
