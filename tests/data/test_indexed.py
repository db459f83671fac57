"""Indexed dataset: parity with Megatron-Core's reader and writer, merge, atomic writes, corrupt files."""

import os
import struct

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megacode.data.indexed import (HEADER_SIZE, IndexedDataset, IndexedDatasetError, IndexedDatasetWriter,
                                   best_dtype, merge_datasets)

DTYPES = [np.uint16, np.int32]


def random_docs(rng, n, vocab, max_len=300):
    # Includes empty documents: the format allows them and the reader must too.
    return [rng.integers(0, vocab, int(rng.integers(0, max_len))) for _ in range(n)]


def write_ours(prefix, docs, dtype):
    with IndexedDatasetWriter(prefix, dtype) as w:
        w.add_document(docs[0])
        rest = docs[1:]
        w.add_documents(np.concatenate(rest), [len(d) for d in rest])
    return prefix


def write_megatron(prefix, docs, dtype, seqs_per_doc=1):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for k, d in enumerate(docs):
        builder.add_item(torch.from_numpy(np.asarray(d, dtype=np.int64)))
        if (k + 1) % seqs_per_doc == 0:
            builder.end_document()
    if len(docs) % seqs_per_doc:
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


@pytest.mark.parametrize("dtype", DTYPES)
def test_ours_read_by_megatron_and_byte_identical(tmp_path, dtype):
    rng = np.random.default_rng(1)
    vocab = 32016 if dtype == np.uint16 else 200_000
    docs = random_docs(rng, 400, vocab)
    ours = write_ours(str(tmp_path / "ours"), docs, dtype)
    meg = MegatronIndexedDataset(ours)
    assert len(meg) == len(docs)
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(meg[i], d)
    np.testing.assert_array_equal(meg.document_indices, np.arange(len(docs) + 1))
    theirs = write_megatron(str(tmp_path / "theirs"), docs, dtype)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"theirs{ext}").read_bytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_megatron_files_read_by_ours(tmp_path, dtype):
    rng = np.random.default_rng(2)
    docs = random_docs(rng, 301, 30000)
    # Three sequences per document: document_indices differ from 0..S.
    prefix = write_megatron(str(tmp_path / "meg"), docs, dtype, seqs_per_doc=3)
    ds, meg = IndexedDataset(prefix), MegatronIndexedDataset(prefix)
    assert len(ds) == len(docs) and ds.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ds.document_indices, meg.document_indices)
    assert ds.num_documents == 101
    np.testing.assert_array_equal(ds.sequence_lengths, [len(d) for d in docs])
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(ds[i], d)
        assert ds[i].dtype == np.dtype(dtype)
    i = int(np.argmax(ds.sequence_lengths))
    np.testing.assert_array_equal(ds.get(i, 5, 7), docs[i][5:12])
    np.testing.assert_array_equal(ds.get(i, 5), docs[i][5:])
    np.testing.assert_array_equal(ds[-1], docs[-1])
    assert [len(x) for x in ds[2:5]] == [len(d) for d in docs[2:5]]


def test_reader_views_are_zero_copy_and_bounds_checked(tmp_path):
    docs = [np.arange(10), np.arange(3)]
    ds = IndexedDataset(write_ours(str(tmp_path / "a"), docs, np.uint16))
    assert not ds[0].flags.owndata and not ds[0].flags.writeable
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
    with pytest.raises(IndexError, match="outside sequence 1"):
        ds.get(1, 2, 5)
    with pytest.raises(IndexError):
        ds.get(0, -1, 2)


def test_writer_rejects_tokens_outside_dtype_and_non_integers(tmp_path):
    prefix = str(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"bad.*token 70000 at flat position 2"):
        with IndexedDatasetWriter(prefix, np.uint16) as w:
            w.add_document([1, 2, 70000])
    with pytest.raises(ValueError, match=r"token -1 at flat position 1"):  # int32 input: converted in C++
        IndexedDatasetWriter(prefix, np.uint16).add_document(np.array([1, -1], np.int32))
    with pytest.raises(ValueError, match=r"token 300 at flat position 0"):
        IndexedDatasetWriter(prefix, np.uint8).add_document(np.array([300], np.int16))
    with pytest.raises(ValueError, match="integers"):
        IndexedDatasetWriter(prefix, np.uint16).add_document(np.array([1.5]))
    with pytest.raises(ValueError, match="lengths sum to 5"):
        IndexedDatasetWriter(prefix, np.int32).add_documents(np.arange(4), [2, 3])
    with pytest.raises(ValueError, match="float32"):
        IndexedDatasetWriter(prefix, np.float32)
    assert best_dtype(32016) == np.uint16 and best_dtype(65500) == np.int32 and best_dtype(None) == np.int32
    assert os.listdir(tmp_path) == []


def test_writer_takes_lists_tensors_and_empty_documents(tmp_path):
    prefix = str(tmp_path / "mixed")
    with IndexedDatasetWriter(prefix, np.int32) as w:
        w.add_document([])  # np.asarray([]) is float64: still an empty document
        w.add_document(torch.tensor([5, 6, 7]))
        w.add_documents(np.zeros(0, np.int64), np.zeros(0, np.int64))  # nothing
        w.add_documents(np.array([1, 2, 3, 4], np.int32), np.array([1, 3]))
        assert (w.num_documents, w.num_tokens) == (4, 7)
    ds = IndexedDataset(prefix)
    assert [ds[i].tolist() for i in range(len(ds))] == [[], [5, 6, 7], [1], [2, 3, 4]]


def test_writer_is_atomic(tmp_path):
    prefix = str(tmp_path / "ds")
    w = IndexedDatasetWriter(prefix, np.uint16)
    w.add_documents(np.arange(100), [50, 50])
    assert not os.path.exists(prefix + ".bin") and not os.path.exists(prefix + ".idx")
    w.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"):
        with IndexedDatasetWriter(prefix, np.uint16) as w:
            w.add_document(np.arange(10))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with IndexedDatasetWriter(prefix, np.uint16) as w:
        w.add_document(np.arange(10))
    assert sorted(os.listdir(tmp_path)) == ["ds.bin", "ds.idx"]
    with pytest.raises(RuntimeError, match="already finalized"):
        w.add_document([1])


def test_merge_matches_concatenation_and_megatron(tmp_path):
    rng = np.random.default_rng(3)
    a_docs, b_docs = random_docs(rng, 50, 1000), random_docs(rng, 60, 1000)
    a = write_ours(str(tmp_path / "a"), a_docs, np.uint16)
    b = write_megatron(str(tmp_path / "b"), b_docs, np.uint16, seqs_per_doc=4)
    merge_datasets([a, b], str(tmp_path / "m"))
    m = IndexedDataset(str(tmp_path / "m"))
    for i, d in enumerate(a_docs + b_docs):
        np.testing.assert_array_equal(m[i], d)
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    builder.add_index(a)
    builder.add_index(b)
    builder.finalize(str(tmp_path / "ref.idx"))
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"m{ext}").read_bytes() == (tmp_path / f"ref{ext}").read_bytes()
    c = write_ours(str(tmp_path / "c"), a_docs, np.int32)
    with pytest.raises(IndexedDatasetError, match=r"c\.idx.*dtype int32 differs from uint16"):
        merge_datasets([a, c], str(tmp_path / "m2"))
    assert not any(p.startswith("m2") for p in os.listdir(tmp_path))


# --- corrupt files --------------------------------------------------------------------------

def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _truncate(path, nbytes):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - nbytes)


S = 20  # sequences in the corrupted dataset
PTR = HEADER_SIZE + 4 * S  # offset of the pointer array
DOCS = PTR + 8 * S  # offset of the document index

CORRUPTIONS = {
    # name: (file to damage, damage, file named in the error, words in the error)
    "truncated_idx": (".idx", lambda p: _truncate(p, 5), ".idx", "does not match its counts"),
    "truncated_header": (".idx", lambda p: _truncate(p, os.path.getsize(p) - 12), ".idx", "truncated header"),
    "truncated_bin": (".bin", lambda p: _truncate(p, 6), ".bin", "lengths in the .idx add up to"),
    "wrong_magic": (".idx", lambda p: _patch(p, 0, b"XXIDIDX"), ".idx", "bad magic"),
    "wrong_version": (".idx", lambda p: _patch(p, 9, struct.pack("<Q", 2)), ".idx", "unsupported version 2"),
    "unknown_dtype_code": (".idx", lambda p: _patch(p, 17, b"\x09"), ".idx", "unknown dtype code 9"),
    "wrong_dtype_code": (".idx", lambda p: _patch(p, 17, b"\x04"), ".bin", "x 4 bytes"),
    "count_mismatch": (".idx", lambda p: _patch(p, 18, struct.pack("<Q", S + 1)), ".idx", "21 sequences"),
    "doc_count_mismatch": (".idx", lambda p: _patch(p, 26, struct.pack("<Q", S)), ".idx", "does not match"),
    "flipped_pointers": (".idx", lambda p: _swap_pointers(p, 3, 4), ".idx", "not monotone: sequence 4"),
    "pointer_out_of_bounds": (".idx", lambda p: _patch(p, PTR + 8 * (S - 1), struct.pack("<q", 1 << 40)),
                              ".idx", "sequence 19 is out of bounds"),
    "pointer_gap": (".idx", lambda p: _shift_pointer(p, 5, 2), ".idx", "sequence 5 is byte"),
    "negative_length": (".idx", lambda p: _patch(p, HEADER_SIZE + 4 * 2, struct.pack("<i", -3)), ".idx",
                        "negative length -3"),
    "doc_index_not_monotone": (".idx", lambda p: _patch(p, DOCS + 8 * 5, struct.pack("<q", 1)), ".idx",
                               "not monotone at entry 5: 1 after 4"),
    "doc_index_end": (".idx", lambda p: _patch(p, DOCS + 8 * S, struct.pack("<q", S - 1)), ".idx",
                      "not at the sequence count 20"),
    "missing_bin": (".bin", os.remove, ".bin", "no such file"),
}


def _shift_pointer(path, i, delta):
    with open(path, "rb") as f:
        f.seek(PTR + 8 * i)
        (value,) = struct.unpack("<q", f.read(8))
    _patch(path, PTR + 8 * i, struct.pack("<q", value + delta))


def _swap_pointers(path, i, j):
    with open(path, "rb") as f:
        raw = f.read()
    pi, pj = raw[PTR + 8 * i:PTR + 8 * i + 8], raw[PTR + 8 * j:PTR + 8 * j + 8]
    _patch(path, PTR + 8 * i, pj)
    _patch(path, PTR + 8 * j, pi)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_files_raise_clear_error(tmp_path, name):
    target, damage, named, words = CORRUPTIONS[name]
    rng = np.random.default_rng(4)
    docs = [rng.integers(0, 1000, int(rng.integers(5, 40))) for _ in range(S)]
    prefix = write_ours(str(tmp_path / name), docs, np.uint16)
    IndexedDataset(prefix)  # intact: opens
    damage(prefix + target)
    with pytest.raises(IndexedDatasetError) as err:
        IndexedDataset(prefix)
    message = str(err.value)
    assert message.startswith(prefix + named), message
    assert words in message, message
    assert isinstance(err.value, ValueError)


def test_writer_accepts_arrays_unpickled_from_another_process(tmp_path):
    # Worker processes send token arrays back pickled; their dtype objects are copies, not numpy's
    # singletons, and must still be recognised (int64 conversion path and native uint16 path).
    import pickle

    prefix = str(tmp_path / "unpickled")
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as writer:
        writer.add_documents(pickle.loads(pickle.dumps(np.arange(10, dtype=np.uint16))), np.array([4, 6]))
        writer.add_documents(pickle.loads(pickle.dumps(np.arange(3, dtype=np.int64))), np.array([3]))
    ds = IndexedDataset(prefix)
    assert [list(ds[i]) for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9], [0, 1, 2]]
