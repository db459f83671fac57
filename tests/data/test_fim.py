"""FIM layouts and prompts against the SentencePiece binding (tests/data/fim_reference.py).

The tokenizer is the shared tiny Llama-style model extended with Code Llama's 16 pieces (the
infilling pieces at 2007..2010), as tools/build_codellama_tokenizer.py builds it.
"""

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fim_reference import Reference  # noqa: E402
from spm_fixtures import multilingual_texts, stdlib_texts, tiny_model  # noqa: E402

import megacode.tokenizer as T  # noqa: E402
from megacode.data import fim  # noqa: E402
from megacode.tokenizer.codellama import extend_with_infill_pieces  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fim") / "codellama-tiny.model"
    path.write_bytes(extend_with_infill_pieces(tiny_model().read_bytes(), allow_non_llama_base=True))
    return path


@pytest.fixture(scope="module")
def tok(model):
    return T.load(model)


@pytest.fixture(scope="module")
def ref(model):
    return Reference(model)


def edge_texts():
    return ["", "a", " ", "é", "😀", "東", "\n", "  ", " x", "x ", "▁", "☺", "☺x", "a\u0301", "\x00", "👨‍💻",
            "def f():\n    return 1\n", "   leading", "trailing   ", "\t\r\n", "<PRE> <SUF> <MID> <EOT>",
            "a" * 300, "😀" * 40, "x = 1  # 注释 ünïcödé 😀\n" * 3]


def corpus(n_random: int, seed: int):
    """Edge cases, multilingual text (rare code points through byte fallback) and random slices of
    stdlib sources (a slice may start inside a word or with spaces)."""
    rng = random.Random(seed)
    code = stdlib_texts(400_000)
    texts = edge_texts() + multilingual_texts(300, seed=seed)
    for _ in range(n_random):
        t = rng.choice(code)
        a = rng.randrange(len(t))
        texts.append(t[a:a + rng.choice([1, 2, 5, 40, 300, 2000])])
    return texts


def splits(rng, n):
    """Split points covering empty prefix / middle / suffix and the uniform case."""
    kind = rng.randrange(6)
    if kind == 0:
        return 0, 0
    if kind == 1:
        return n, n
    if kind == 2:
        return 0, n
    if kind == 3:
        k = rng.randint(0, n)
        return k, k
    a, b = rng.randint(0, n), rng.randint(0, n)
    return min(a, b), max(a, b)


def test_layouts_match_the_binding_reference(tok, ref):
    rng = random.Random(0)
    checked = 0
    for text in corpus(2500, seed=1):
        for _ in range(2):
            lo, hi = splits(rng, len(text))
            for spm_layout in (False, True):
                got = fim.fim_tokens(tok, text, lo, hi, spm_layout)
                assert got == ref.layout(text, lo, hi, spm_layout), (text, lo, hi, spm_layout)
                checked += 1
    assert checked > 10_000


def test_suffix_and_middle_drop_only_the_implicit_space(tok, ref):
    """enc' as Meta's `encode_infilling` ("☺" + s, first two ids dropped) wherever that trick is
    valid (the text does not start with "☺", which merges with a second "☺" in this model)."""
    for text in corpus(300, seed=2):
        if not text.startswith("☺"):
            assert tok.encode_infill(text) == ref.meta_enc_infill(text) == ref.enc_infill(text), text
    # PSM with a space-led suffix keeps that space as its own "▁" piece, unlike enc.
    ids = fim.fim_tokens(tok, "a = 1 b", 5, 5, False)
    suffix = ids[ids.index(tok.suf_id) + 1:ids.index(tok.mid_id)]
    assert tok.decode_infill(suffix) == " b" and suffix == tok.encode_infill(" b") != tok.encode(" b")


def test_split_points_are_code_points_and_parts_decode_back(tok, ref):
    text = "aé東😀👨‍💻 z"
    for lo in range(len(text) + 1):
        for hi in range(lo, len(text) + 1):
            for spm_layout in (False, True):
                ids = fim.fim_tokens(tok, text, lo, hi, spm_layout)
                prefix, middle, suffix = ref.parse(ids, spm_layout)
                assert prefix + middle + suffix == text
                if not spm_layout:
                    assert (prefix, middle, suffix) == (text[:lo], text[lo:hi], text[hi:])


def test_decoding_matches_the_binding_and_refuses_lossy_ids(tok, ref):
    rng = np.random.default_rng(3)
    for text in corpus(200, seed=3):
        ids = tok.encode(text)
        assert fim.decode_document(tok, ids) == ref.sp.decode(ids) == text.replace("▁", " ")
    specials = [tok.pre_id, tok.eot_id]
    for _ in range(2000):  # random clean ids, including byte pieces forming valid characters
        ids = rng.integers(3 + 256, tok.vocab_size, rng.integers(0, 12)).tolist()
        if rng.random() < 0.5:
            ids.insert(int(rng.integers(0, len(ids) + 1)), specials[int(rng.integers(0, 2))])
        at = int(rng.integers(0, len(ids) + 1))
        ids[at:at] = [3 + b for b in "é😀"[int(rng.integers(0, 2))].encode()]  # <0xXX> pieces
        assert fim.decode_document(tok, ids) == ref.sp.decode(ids), ids
    word = tok.encode("word")
    for lossy in ([tok.unk_id], [tok.bos_id], [tok.eos_id], [3 + 0xE2, 3 + 0x96],  # <unk>, control, cut UTF-8
                  [3 + 0xC0, 3 + 0x80], [3 + 0xED, 3 + 0xA0, 3 + 0x80], [tok.vocab_size], [-1]):
        assert fim.decode_document(tok, word + lossy + word) is None, lossy
        assert ref.decode_clean(word + lossy + word) is None


def test_infill_prompts_follow_meta(tok, ref):
    prefix, suffix = 'def remove_non_ascii(s: str) -> str:\n    """ ', "\n    return result\n"
    psm = fim.infill_prompt(tok, prefix, suffix, spm=False)
    spm_ids = fim.infill_prompt(tok, prefix, suffix, spm=True)
    bos = ref.bos
    assert psm == [bos, ref.pre] + ref.enc(prefix) + [ref.suf] + ref.meta_enc_infill(suffix) + [ref.mid]
    assert spm_ids == [bos, ref.pre, ref.suf] + ref.meta_enc_infill(suffix) + [ref.mid] + ref.enc(prefix)
    # The prompt is the training layout up to <MID> (PSM) or enc(prefix) (SPM), after BOS.
    text = prefix + "middle" + suffix
    lo, hi = len(prefix), len(prefix) + len("middle")
    assert fim.fim_tokens(tok, text, lo, hi, False)[:len(psm) - 1] == psm[1:]
    train_spm = fim.fim_tokens(tok, prefix + suffix, len(prefix), len(prefix), True)
    assert train_spm[:len(spm_ids) - 1] == spm_ids[1:]
    assert fim.infill_prompt(tok, "", "", False) == [bos, ref.pre, ref.suf, ref.mid]


def test_generation_is_cut_at_eot_and_evaluation_uses_it(tok):
    from megacode.eval import hooks

    middle = tok.encode_infill("  return x\n")
    assert fim.cut_at_eot(tok, middle + [tok.eot_id] + tok.encode("junk")) == middle
    assert fim.cut_at_eot(tok, middle) == middle
    assert fim.infill_text(tok, middle + [tok.eot_id, tok.eos_id]) == "  return x\n"
    assert hooks.infill_completion(tok, middle + [tok.eot_id, 5]) == "  return x\n"
    for spm_layout in (False, True):
        assert hooks.infill_prompt_ids(tok, "def f(", "):", spm_layout) == fim.infill_prompt(tok, "def f(", "):", spm_layout)


def test_errors_name_the_problem(tok):
    with pytest.raises(ValueError, match=r"0 <= lo <= hi <= len\(text\) = 3, got lo=2, hi=1"):
        fim.fim_tokens(tok, "abc", 2, 1, False)
    with pytest.raises(ValueError, match="hi=4"):
        fim.fim_tokens(tok, "abc", 0, 4, True)
    with pytest.raises(TypeError, match="text must be str"):
        fim.fim_tokens(tok, b"abc", 0, 1, True)
    base = T.load(tiny_model())
    with pytest.raises(ValueError, match=f"{base.model_path} has none of them"):
        fim.infill_prompt(base, "a", "b", False)
    with pytest.raises(ValueError, match="infilling pieces"):
        fim.fim_tokens(base, "abc", 0, 1, False)
