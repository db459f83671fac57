"""The C++ SentencePiece core against the PyPI binding, id for id, on large mixed corpora.

Corpora: Python stdlib sources (several MB) and generated text with CJK, kana, Hangul, emoji
(ZWJ sequences, skin tones), accented Latin and random rare code points that need byte fallback.
Models: the shared tiny model, a larger vocabulary, user-defined pieces (frozen, overlapping,
one starting with "▁"), no byte fallback (runs of <unk>), and a tiny word cache (eviction).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

sys.path.insert(0, str(Path(__file__).parent))
from spm_fixtures import multilingual_texts, stdlib_texts, tiny_model, train_model, training_sentences  # noqa: E402

from megacode.tokenizer import load  # noqa: E402
from megacode.tokenizer.fast import FastEncoder  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    return stdlib_texts(5_000_000) + multilingual_texts(1500, seed=11)


def reference(model, texts, infill=False):
    """The binding's ids, flattened like encode_batch's output."""
    proto = None
    if infill:
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(Path(model).read_bytes())
        proto.normalizer_spec.add_dummy_prefix = False
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString()) if infill else \
        spm.SentencePieceProcessor(model_file=str(model))
    docs = sp.encode(list(texts), num_threads=2)
    return [i for d in docs for i in d], [len(d) for d in docs]


def assert_same(model, texts, flat, lengths, infill=False):
    ref_flat, ref_lengths = reference(model, texts, infill)
    if lengths.tolist() != ref_lengths or flat.tolist() != ref_flat:
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        ref_off = np.concatenate([[0], np.cumsum(ref_lengths)])
        for i, text in enumerate(texts):
            ours, theirs = flat[offsets[i]:offsets[i + 1]].tolist(), ref_flat[ref_off[i]:ref_off[i + 1]]
            assert ours == theirs, f"document {i} differs: {text[:200]!r}"
        raise AssertionError("outputs differ")


def test_tiny_model_whole_corpus(corpus):
    model = tiny_model()
    tok = load(model)
    assert tok.backend == "megacode"
    flat, lengths = tok.encode_batch(corpus, num_threads=2)
    assert lengths.sum() > 1_000_000
    assert_same(model, corpus, flat, lengths)
    byte_ids = {tok.piece_to_id(f"<0x{b:02X}>") for b in range(256)}
    assert len(set(flat.tolist()) & byte_ids) > 50  # byte fallback was really exercised


def test_infill_encoding_whole_corpus(corpus):
    model = tiny_model()
    flat, lengths = load(model).encode_batch(corpus, infill=True)
    assert_same(model, corpus, flat, lengths, infill=True)


def test_larger_vocabulary(corpus):
    model = train_model(training_sentences(3_000_000), 8000)
    flat, lengths = load(model).encode_batch(corpus)
    assert_same(model, corpus, flat, lengths)


def test_user_defined_pieces():
    symbols = ["<|fim|>", "▁<PRE>", "self.", "ab", "abc", "東京"]
    model = train_model(training_sentences(600_000), 2000, user_defined_symbols=symbols)
    texts = multilingual_texts(300, seed=3) + [
        "x = self.value + abcab <PRE> <|fim|>東京都 abab",
        " <PRE>self.self.<|fim|<|fim|>>",
        "<PRE>abcd ab c",
    ] + stdlib_texts(1_000_000)
    tok = load(model)
    assert tok.backend == "megacode"
    flat, lengths = tok.encode_batch(texts)
    assert_same(model, texts, flat, lengths)
    assert tok.piece_to_id("▁<PRE>") in tok.encode(" <PRE>")


def test_no_byte_fallback_merges_unknown_runs():
    model = train_model(training_sentences(600_000), 2000, byte_fallback=False, character_coverage=0.98)
    texts = multilingual_texts(400, seed=4) + ["\U00010001\U00010002 x \U00010003", "\U00010004"]
    tok = load(model)
    assert tok.backend == "megacode"
    flat, lengths = tok.encode_batch(texts)
    assert_same(model, texts, flat, lengths)
    assert tok.encode("\U00010001\U00010002") == [tok.piece_to_id("▁"), tok.unk_id] or \
        tok.encode("\U00010001\U00010002") == [tok.unk_id]


@pytest.mark.parametrize("cache_entries, linear_max", [(64, 48), (1 << 20, 0), (1 << 20, 1 << 30)])
def test_cache_eviction_and_both_merge_loops(corpus, cache_entries, linear_max):
    # A 64-word cache is cleared over and over; linear_max 0 / 2^30 sends every word through the
    # heap / the scanning merge loop.
    model = tiny_model()
    fast = FastEncoder(Path(model).read_bytes(), spm.SentencePieceProcessor(model_file=str(model)).vocab_size(),
                       cache_entries=cache_entries, linear_max_symbols=linear_max)
    texts = corpus[:200] + corpus[-300:]
    flat, lengths = fast.encode_batch(texts, num_threads=2)
    assert_same(model, texts, flat, lengths)


def test_equal_scores_merge_leftmost_first():
    # Two candidate pairs tie only when they form the same piece, e.g. "cc" in "ccc": sentencepiece
    # merges the leftmost first ("cc" + "c"). Build such texts from the vocabulary itself.
    model = tiny_model()
    sp = spm.SentencePieceProcessor(model_file=str(model))
    doubles = [sp.id_to_piece(i) for i in range(sp.vocab_size())
               if sp.id_to_piece(i)[:1] * 2 == sp.id_to_piece(i) and not sp.is_control(i) and not sp.is_byte(i)]
    texts = [sep + p[0] * k for p in doubles for k in (3, 5, 7) for sep in ("", "x", "▁")]
    texts = [t for t in texts if sp.piece_to_id(t[-3:]) == sp.unk_id()]  # the triple is no piece
    assert len(texts) >= 10, doubles
    flat, lengths = load(model).encode_batch(texts)
    assert_same(model, texts, flat, lengths)
    firsts = [sp.id_to_piece(d[0]) for d in sp.encode(texts)]
    assert sum(len(f) == 2 and f[0] == f[1] for f in firsts) >= 5  # leftmost pairs did merge first
