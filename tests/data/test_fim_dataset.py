"""FimDataset on real indexed datasets: every sample equals the binding reference
(tests/data/fim_reference.py), shares of transformed / SPM documents, cut documents untouched,
parts decoding to the stored text, packing to seq_length + 1 with the drop count, determinism
over loader threads, resume and pickling, and `data.fim` from the config."""

import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fim_reference import Reference, draws, unit  # noqa: E402
from spm_fixtures import multilingual_texts, stdlib_texts, tiny_model  # noqa: E402

import megacode.tokenizer as T  # noqa: E402
from megacode.config import ConfigError, Layout  # noqa: E402
from megacode.config.schema import DataConfig  # noqa: E402
from megacode.data.blend import BlendedDataset  # noqa: E402
from megacode.data.fim_dataset import FimDataset, apply_fim, fim_parts, probe, with_fim  # noqa: E402
from megacode.data.gpt_dataset import PackedDataset  # noqa: E402
from megacode.data.indexed import IndexedDatasetWriter  # noqa: E402
from megacode.data.loader import StepLoader  # noqa: E402
from megacode.tokenizer.codellama import extend_with_infill_pieces  # noqa: E402

SEQ = 256


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fimds")
    model = tmp / "codellama-tiny.model"
    model.write_bytes(extend_with_infill_pieces(tiny_model().read_bytes(), allow_non_llama_base=True))
    tok = T.load(model)
    return {"tmp": tmp, "model": model, "tok": tok, "ref": Reference(model), "cache": str(tmp / "cache")}


def short_docs(tok, n, seed):
    """Token lists of short documents (most end in EOS, some start with BOS): code slices, text
    with rare code points (byte fallback), one-character and empty documents, documents that do
    not decode losslessly (left as stored) and non-canonical ids (re-encoding them is shorter)."""
    rng = random.Random(seed)
    code = stdlib_texts(300_000)
    multi = multilingual_texts(200, seed=seed)
    docs = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            t = rng.choice(code)
            a = rng.randrange(len(t))
            text = t[a:a + rng.randint(1, 60)]
        elif kind < 0.8:
            words = rng.choice(multi).split(" ")
            text = " ".join(words[:rng.randint(1, 6)])
        elif kind < 0.9:
            text = rng.choice(["x", "é", "😀", " ", "\n", "東"])
        else:
            text = ""
        ids = tok.encode(text)
        chars = [tok.piece_to_id(c) for c in "▁" + text.replace(" ", "▁")]
        if text and rng.random() < 0.05 and None not in chars:  # non-canonical: one piece per character
            ids = chars
        if ids and rng.random() < 0.02:
            ids.insert(rng.randrange(len(ids) + 1), rng.choice([tok.unk_id, tok.bos_id, tok.eos_id, 3 + 0xE2]))
        if rng.random() < 0.1:
            ids = [tok.bos_id] + ids
        if rng.random() < 0.9:
            ids = ids + [tok.eos_id]
        docs.append(ids or [tok.eos_id])
    return docs


def write(prefix, docs):
    lens = np.array([len(d) for d in docs])
    with IndexedDatasetWriter(str(prefix), np.uint16) as w:
        w.add_documents(np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]), lens)
    return str(prefix)


@pytest.fixture(scope="module")
def big(env):
    docs = short_docs(env["tok"], 4000, seed=5)
    packed = PackedDataset(write(env["tmp"] / "short", docs), np.arange(len(docs)), SEQ, 1400, 7, env["cache"])
    return FimDataset(packed, env["tok"], rate=0.9, spm_rate=0.5)


def walk(ref, ds, i, out, parts):
    """Check sample i's output piece by piece; returns per-sample counts and its length before packing.

    Cut pieces and untransformed documents appear as stored (less what the packing dropped at the
    sample's ends); whole documents lose tokens only once the cut pieces at both ends are used up;
    each transformed document that is kept whole decodes, part by part, to the stored text."""
    counts = dict(eligible=0, transformed=0, spm=0, unclean=0, boundary=0, whole_cut=0)
    pos = 0
    ends_used_up = all(p[5] == p[6] for p in (parts[0], parts[-1]) if not p[3]) and len(parts) > 1
    for k, (d, s, e, whole, full, lo, hi) in enumerate(parts):
        stored = ds.packed.indexed.get(d, s, e - s).tolist()
        assert out[pos:pos + hi - lo] == full[lo:hi], (i, k)
        pos += hi - lo
        if not whole:
            assert full == stored and (lo == 0 or k == 0) and (hi == len(full) or k == len(parts) - 1)
            continue
        assert lo == 0 and (hi == len(full) or ends_used_up or len(parts) == 1), (i, k)
        counts["eligible"] += 1
        counts["whole_cut"] += hi < len(full)
        counts["boundary"] += k == len(parts) - 1
        dr = draws(ds.seed, i, k, d)
        if not unit(dr[0]) < ds.rate:
            assert full == stored
        elif full == stored:  # not decodable losslessly: as stored
            counts["unclean"] += 1
            head = int(stored[0] == ref.bos)
            tail = int(len(stored) > head and stored[-1] == ref.eos)
            assert ref.decode_clean(stored[head:len(stored) - tail]) is None
        else:
            spm_layout = unit(dr[1]) < ds.spm_rate
            counts["transformed"] += 1
            counts["spm"] += spm_layout
            head, tail = int(full[0] == ref.bos), int(full[-1] == ref.eos)
            text = "".join(ref.parse(full[head:len(full) - tail], spm_layout))
            assert text == ref.sp.decode(stored), (i, k)
    assert pos == len(out) or pos < len(out)  # the rest, if any, was read past the sample's end
    return counts, sum(len(p[4]) for p in parts)


def test_samples_equal_the_reference_and_shares_hold(env, big):
    ref = env["ref"]
    totals = dict(eligible=0, transformed=0, spm=0, unclean=0, boundary=0, whole_cut=0)
    dropped = continued = 0
    for i in range(len(big)):
        out = big[i].tolist()
        assert len(out) == SEQ + 1
        expected, parts = ref.sample_parts(big, i)
        assert out == expected, i
        counts, raw = walk(ref, big, i, out, parts)
        for name in totals:
            totals[name] += counts[name]
        dropped += max(0, raw - (SEQ + 1))
        continued += max(0, SEQ + 1 - raw)
    stats = big.stats.snapshot()
    for name in ("eligible", "transformed", "spm", "unclean", "whole_cut"):
        assert stats[name] == totals[name], name
    assert (stats["dropped"], stats["continued"]) == (dropped, continued)
    assert totals["eligible"] > 15_000 and totals["unclean"] > 50 and totals["boundary"] > 10 and continued > 0
    assert abs((totals["transformed"] + totals["unclean"]) / totals["eligible"] - 0.9) < 0.02
    assert abs(totals["spm"] / totals["transformed"] - 0.5) < 0.02
    assert stats["samples"] == len(big) and stats["sample_tokens"] == len(big) * (SEQ + 1)
    assert "whole documents transformed" in big.stats.describe()


def test_documents_at_the_context_boundary(env):
    """Documents of exactly seq+1 tokens: sample 0 is one whole document (transformed, then cut
    back to seq+1: its tail is dropped); the others hold two cut pieces (never transformed).
    Documents of exactly seq tokens: each sample is a whole document plus one token."""
    tok, ref = env["tok"], env["ref"]
    code = stdlib_texts(200_000)
    ids = tok.encode("\n".join(code))
    for n, name in ((SEQ + 1, "exact1"), (SEQ, "exact0")):
        docs = [ids[k * n:(k + 1) * n] for k in range(12)]
        packed = PackedDataset(write(env["tmp"] / name, docs), np.arange(12), SEQ, 10, 3, env["cache"])
        ds = FimDataset(packed, tok, rate=1.0, spm_rate=0.5)
        for i in range(len(ds)):
            out = ds[i].tolist()
            spans = packed.pieces(i)
            whole = [s == 0 and e == n for _, s, e in spans]
            assert out == ref.sample(ds, i) and len(out) == SEQ + 1
            if any(whole):
                assert out[0] == tok.pre_id and tok.eot_id not in out  # transformed, tail cut
            else:
                assert out == np.concatenate([packed.indexed.get(d, s, e - s) for d, s, e in spans]).tolist()
        assert ds.stats.snapshot()["dropped"] > 0


def layout(gbs=16, mbs=4):
    return Layout(world_size=1, tp=1, pp=1, vp=None, dp=1, num_layers=4, global_batch_size=gbs,
                  micro_batch_size=mbs, num_microbatches=gbs // mbs)


def test_same_samples_over_threads_resume_and_pickle(env, big):
    lay = layout()
    steps = [0, 16, 48, 112]
    one = StepLoader(big, lay, num_workers=1, backend="python")
    four = StepLoader(big, lay, num_workers=4, backend="python")
    a = [one.get(c) for c in steps]
    b = [four.get(c) for c in steps]
    # A resumed run: a fresh dataset (indices loaded from the cache) read from step 3 on.
    packed = PackedDataset(big.packed.indexed.prefix, big.packed.split_docs, SEQ, len(big), 7, env["cache"])
    assert not packed.built
    resumed = StepLoader(FimDataset(packed, T.load(env["model"])), lay, num_workers=2, backend="python")
    c = resumed.get(steps[-1])
    for x, y in zip(a, b):
        for mx, my in zip(x, y):
            assert all(np.array_equal(mx[k], my[k]) for k in mx)
    assert all(np.array_equal(mx["tokens"], mc["tokens"]) for mx, mc in zip(a[-1], c))
    clone = pickle.loads(pickle.dumps(big))
    assert all(np.array_equal(clone[i], big[i]) for i in (0, 5, 777))
    for ld in (one, four, resumed):
        ld.close()


def test_blends_wrap_text_components_and_probe(env, big):
    tok = env["tok"]
    docs = short_docs(tok, 500, seed=9)
    other = PackedDataset(write(env["tmp"] / "other", docs), np.arange(500), SEQ, 100, 8, env["cache"])
    plain = PackedDataset(big.packed.indexed.prefix, big.packed.split_docs, SEQ, len(big), 7, env["cache"])
    blend = BlendedDataset([plain, other], [0.8, 0.2], 400, 1, env["cache"])
    before = [blend[i].copy() for i in range(0, 400, 37)]
    assert apply_fim(blend, tok, 0.9, 0.5) is blend
    parts = fim_parts(blend)
    assert [p.packed for p in parts] == [plain, other]
    for i in range(0, 400, 37):
        d, j = blend.source(i)
        assert np.array_equal(blend[i], parts[d][j])
    assert any(not np.array_equal(x, blend[i]) for x, i in zip(before, range(0, 400, 37)))
    stats = probe(blend, 8).snapshot()
    assert stats["samples"] == 16 and stats["eligible"] > 0


def test_config_turns_fim_on_and_checks_the_tokenizer(env, big):
    packed = big.packed
    off = DataConfig(tokenizer_model=str(env["model"]))
    assert with_fim(off, packed, None) == (packed, None)
    on = DataConfig(tokenizer_model=str(env["model"]))
    on.fim.enabled, on.fim.rate, on.fim.spm_rate = True, 0.5, 0.25
    train, valid = with_fim(on, packed, packed)
    assert isinstance(train, FimDataset) and isinstance(valid, FimDataset)
    assert (train.rate, train.spm_rate) == (0.5, 0.25) and train.tokenizer.pre_id == 2007
    missing = DataConfig()
    missing.fim.enabled = True
    with pytest.raises(ConfigError, match="needs data.tokenizer_model"):
        with_fim(missing, packed, None)
    base = DataConfig(tokenizer_model=str(tiny_model()))
    base.fim.enabled = True
    with pytest.raises(ConfigError, match=f"data.tokenizer_model={tiny_model()}: .*infilling pieces"):
        with_fim(base, packed, None)


def test_layout_and_every_token_dtype(env, big):
    tok = env["tok"]
    for i in range(0, 300, 7):
        out = big[i]
        spots = big.layout(i)
        assert spots[0][1] == 0 and spots[-1][2] == SEQ + 1
        assert all(a[2] == b[1] for a, b in zip(spots, spots[1:]))  # contiguous
        for (d, s, e), first, last, what in spots:
            if d < 0:
                continue
            stored = big.packed.indexed.get(d, s, e - s)
            if what.startswith("as stored"):
                assert np.array_equal(out[first:last], stored[:last - first]), (i, what)
            elif last - first > int(stored[0] == tok.bos_id):  # (a document at the end may be dropped whole)
                assert what.startswith("FIM") and out[first + int(stored[0] == tok.bos_id)] == tok.pre_id
    # The same documents in an int32 file, and the int64 document-order instance: the same samples.
    docs = [big.packed.indexed[k] for k in range(len(big.packed.indexed))]
    lens = np.array([len(d) for d in docs])
    prefix = str(env["tmp"] / "short32")
    with IndexedDatasetWriter(prefix, np.int32) as w:
        w.add_documents(np.concatenate(docs).astype(np.int32), lens)
    wide = FimDataset(PackedDataset(prefix, big.packed.split_docs, SEQ, len(big), 7, env["cache"]), tok)
    assert wide._tokens.dtype == np.int32
    wide._order = wide._order.astype(np.int64)
    wide._sample = wide._core.sample_int32_int64
    for i in range(0, len(big), 97):
        assert np.array_equal(wide[i], big[i])
    with pytest.raises(IndexError, match=r"sample 1400 out of range \[0, 1400\)"):
        big[len(big)]


def test_token_range_error_locates_tokens_after_transformed_documents(env, big):
    """A sample's positions after a transformed document no longer match the stored spans: the
    error uses the FIM layout, giving stored offsets for documents kept as stored and naming the
    document and the rewrite for transformed ones."""
    from megacode.data.provenance import TokenRangeError, check_token_range

    tok, prefix = env["tok"], big.packed.indexed.prefix
    seen = {"stored": 0, "rewritten": 0}
    for i in range(len(big)):
        spots = big.layout(i)
        out = big[i]
        fim_at = [first for (d, _, _), first, last, what in spots if d >= 0 and what.startswith("FIM") and last > first]
        later = [((d, s, e), first, last) for (d, s, e), first, last, what in spots
                 if d >= 0 and what.startswith("as stored") and fim_at and first > fim_at[0] and last - first > 2]
        if not later or seen["stored"] >= 3:
            continue
        (d, s, _), first, _ = later[0]
        position = first + 1
        bad = int(out[position])  # the only nonzero id left, and just outside a vocabulary of `bad`
        if bad == 0:
            continue
        with pytest.raises(TokenRangeError) as err:
            check_token_range(np.where(np.arange(len(out)) == position, out, 0), bad, big, i)
        assert f"{prefix} (.bin/.idx) document {d} token offset {s + 1} " in str(err.value)
        assert int(big.packed.indexed.get(d, s + 1, 1)[0]) == bad  # the offset really holds that id
        seen["stored"] += 1
    for i in range(40):  # a sentinel id beyond a vocabulary cut at ▁<PRE>: inside a transformed document
        out = big[i]
        if not (out >= tok.pre_id).any():
            continue
        with pytest.raises(TokenRangeError) as err:
            check_token_range(out, tok.pre_id, big, i)
        assert "rewritten (FIM" in str(err.value) and "not from the file" in str(err.value)
        seen["rewritten"] += 1
    assert seen["stored"] == 3 and seen["rewritten"] > 0
