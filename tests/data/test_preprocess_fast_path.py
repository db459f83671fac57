"""The C++ preprocessing paths (Tokenizer.encode_jsonl with csrc/jsonl_scan.h, and
Tokenizer.encode_files) against the all-Python path.

Each chunk is processed twice: by a ChunkProcessor whose tokenizer has the C++ core (lines or
files handled in C++, odd ones judged by Python) and by one on the SentencePiece binding (every
line through json.loads, every file through Python's open/decode). Kept documents, token ids,
metadata, reject reasons, details and line numbers must be equal, on hand-written edge cases and
on thousands of randomly built and randomly damaged lines.
"""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from spm_fixtures import multilingual_texts, tiny_model  # noqa: E402

from megacode.data.preprocess.sources import Chunk  # noqa: E402
from megacode.data.preprocess.worker import ChunkProcessor, WorkerOptions  # noqa: E402
from megacode.tokenizer import load  # noqa: E402

EDGE_LINES = [
    b'{"text": "plain"}',
    b'  {"text" : "spaces around" }  \r',  # CRLF files: the \r is JSON whitespace
    b'\t{"text":"tab"}\t',
    b'{"text": "esc \\" \\\\ \\/ \\b \\f \\n \\r \\t end"}',
    b'{"text": "\\u00e9\\u6771\\ud83d\\ude00 pair"}',  # BMP escapes and a surrogate pair
    b'{"text": "\\uD83D\\uDE00 upper hex"}',
    b'{"text": "lone high \\ud83d then text"}',  # Python keeps a lone surrogate: not_utf8 here
    b'{"text": "lone low \\ude00"}',
    b'{"text": "high then high \\ud83d\\ud83d"}',
    b'{"other": "\\udc80", "text": "a lone surrogate elsewhere is fine"}',
    b'{"text": "raw\tcontrol"}',  # a raw tab inside a string: invalid in strict JSON
    b'{"text": "nul \\u0000 escaped"}',
    b'{"text": "del \x7f raw"}',
    '{"text": "caf\u00e9 \u6771\u4eac \U0001F600 raw UTF-8"}'.encode(),
    b'{"text": "bad escape \\x41"}',
    b'{"text": "short \\u12"}',
    b'{"te\\u0078t": "escaped key"}',
    b'{"text": 1, "text": "last duplicate wins"}',
    b'{"text": "first", "text": 2}',
    b'{"text": "a", "n": NaN, "m": Infinity, "k": -Infinity}',
    b'{"text": "a", "n": -NaN}',
    b'{"text": "a", "n": [1, -0, 0.5, 1e5, 1E+5, 2.5e-3, -1.0E-0]}',
    b'{"text": "a", "n": 01}',
    b'{"text": "a", "n": 1.}',
    b'{"text": "a", "n": .5}',
    b'{"text": "a", "n": 1e}',
    b'{"text": "a", "n": +1}',
    b'{"text": "a", "n": ' + b"9" * 4301 + b"}",  # Python refuses ints over 4300 digits
    b'{"text": "a", "n": ' + b"9" * 1200 + b".5}",
    b'{"text": "a", "deep": ' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"text": "a", "nest": {"x": {"y": [true, false, null, {"z": "s"}]}}}',
    b'{"text": "a",}',
    b'{"text": "a" "b": 1}',
    b'{"text": "a"} trailing',
    b'{"text": "a"}{"text": "b"}',
    b'{"text": "a"}\x0c',  # form feed: bytes.strip whitespace, not JSON whitespace
    b'\x0c{"text": "a"}',
    b'\xef\xbb\xbf{"text": "BOM"}',
    b'{"text": ""}',
    b'{"text": null}',
    b'{"text": ["a"]}',
    b'{"TEXT": "case"}',
    b'{}',
    b'[]',
    b'"text"',
    b'42',
    b'null',
    b'{"text": "truncated',
    b'{"text": "a\xe9 latin-1"}',
    b'{"text": "overlong \xc0\xaf"}',
    b'{"text": "encoded surrogate \xed\xa0\x80"}',
    b'{"text": "above max \xf4\x90\x80\x80"}',
    b'{"text": "cut \xe6\x9d"}',
    b"",
    b"   ",
    b"\x0b\x0c",
    b"[" * 5000,  # nested past Python's recursion limit: bad_json, not a crash
]

_SIGNIFICANT = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"u", b"d8", b"n", b"0", b"9", b"e", b"-", b".",
                b" ", b"\t", b"\x00", b"\x1f", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\ud83d", b"\\u", b"NaN"]


def random_line(rng: random.Random, texts) -> bytes:
    obj = {}
    for _ in range(rng.randrange(0, 4)):
        obj[rng.choice(["meta", "id", "n", "nested"])] = rng.choice(
            [1, -2.5e-3, None, True, [1, "x", {"y": [None]}], {"a": "\\"}, "s", float("nan")])
    if rng.random() < 0.95:
        obj["text"] = rng.choice(texts)
    if rng.random() < 0.5:
        obj["code"] = rng.choice(texts)
    keys = list(obj)
    rng.shuffle(keys)
    line = json.dumps({k: obj[k] for k in keys}, ensure_ascii=rng.random() < 0.3)
    if rng.random() < 0.2:
        line = line.replace(": ", rng.choice([":", " : ", ":\t"]))
    raw = line.encode("utf-8")
    for _ in range(rng.choice([0, 0, 1, 2])):  # damage
        i = rng.randrange(len(raw) + 1)
        op = rng.randrange(3)
        if op == 0:
            raw = raw[:i] + raw[i + 1:]
        elif op == 1:
            raw = raw[:i] + rng.choice(_SIGNIFICANT) + raw[i:]
        else:
            raw = raw[:i] + rng.choice(_SIGNIFICANT) + raw[i + 2:]
    return raw.replace(b"\n", b" ")


@pytest.fixture(scope="module")
def processors():
    """(C++ path, Python path) for each key set."""
    model = tiny_model()
    fast_tok, slow_tok = load(model, "megacode"), load(model, "sentencepiece")
    assert fast_tok.encode_jsonl(b"{}", ["text"]) is not None and slow_tok.encode_jsonl(b"{}", ["text"]) is None

    def pair(keys, meta_keys=()):
        opt = WorkerOptions(json_keys=keys, append_eod=True, prepend_bos=False, meta_keys=meta_keys)
        return ChunkProcessor(fast_tok, opt), ChunkProcessor(slow_tok, opt)

    return pair


def check_same(pair, lines=None, trailing_newline=True, chunk=None):
    if chunk is None:
        data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
        chunk = Chunk(0, "test.jsonl", "jsonl", data=data, disk_bytes=len(data))
    fast, slow = pair[0](chunk), pair[1](chunk)
    assert fast.lines == slow.lines and fast.text_bytes == slow.text_bytes
    assert fast.rejects == slow.rejects
    assert fast.rejected == slow.rejected
    assert fast.documents == slow.documents
    assert fast.meta == slow.meta
    for key in slow.tokens:
        np.testing.assert_array_equal(fast.lengths[key], slow.lengths[key])
        np.testing.assert_array_equal(fast.tokens[key], slow.tokens[key])
    return fast


@pytest.mark.parametrize("keys", [("text",), ("text", "code")])
def test_edge_lines_match_python(processors, keys):
    pair = processors(keys)
    lines = [line.replace(b'"text"', b'"code"', 1) if keys != ("text",) and b"code" not in line and i % 3 == 0
             else line for i, line in enumerate(EDGE_LINES)]
    res = check_same(pair, lines)
    if keys == ("text",):  # Python's verdicts, which both paths gave
        assert res.documents == 17
        assert dict(res.rejected) == {"not_utf8": 8, "bad_json": 19, "not_string": 3, "empty": 1, "missing_key": 2,
                                      "not_object": 4, "blank_line": 3}
        status = pair[0].tok.encode_jsonl(b"\n".join(EDGE_LINES), keys)[0]
        assert (status == 0).sum() == 14 and (status == 1).sum() == 3  # C++ decided these without Python
    for line in EDGE_LINES:  # one line at a time too: every verdict on its own
        check_same(pair, [line], trailing_newline=False)
    res = check_same(processors(keys, ("n", "other", "text")), lines)  # metadata: NaN, nested, absent, escaped
    if keys == ("text",):
        assert res.meta[0] == '{"n": null, "other": null, "text": "plain"}'
        assert '{"n": NaN, "other": null, "text": "a"}' in res.meta


def test_random_and_damaged_lines_match_python(processors):
    rng = random.Random(7)
    texts = multilingual_texts(60, seed=5) + ["x", " lead", "tab\tand\nnewline", "\\u0041 literal", "\x00\x1f\x7f"]
    for keys, meta_keys in [(("text",), ()), (("text", "code"), ()), (("text",), ("meta", "n", "nested", "absent"))]:
        pair = processors(keys, meta_keys)
        for _ in range(10):
            check_same(pair, [random_line(rng, texts) for _ in range(500)])


def test_chunk_without_trailing_newline_and_empty_chunk(processors):
    pair = processors(("text",))
    res = check_same(pair, [b'{"text": "a"}', b'{"text": "b"}'], trailing_newline=False)
    assert res.documents == 2 and res.lines == 2
    res = check_same(pair, [], trailing_newline=False)
    assert res.documents == 0 and res.lines == 0


@pytest.mark.parametrize("keys", [("text",), ("text", "code")])
def test_source_files_match_python(tmp_path, processors, keys):
    files = {
        "a.py": "def a():\n    return 1\n".encode(),
        "uni.py": "# 東京 ☺ 😀 naïve\nx = 'ñ'\n".encode(),
        "empty.py": b"",
        "latin1.py": b"s = '\xe9'\n",
        "cut.py": b"# \xe6\x9d",
        "bom.py": b"\xef\xbb\xbfprint(1)\n",
        "big.py": ("def f(x):\n    return x\n" * 20000).encode(),
        "nul.c": b"int x = 0;\x00\n",
    }
    for rel, data in files.items():
        (tmp_path / rel).write_bytes(data)
    (tmp_path / "dir.py").mkdir()  # listed by mistake: unreadable, like a file gone since the walk
    names = sorted(files) + ["missing.py", "dir.py"]
    chunk = Chunk(0, str(tmp_path), "files", files=names, disk_bytes=1)
    res = check_same(processors(keys), chunk=chunk)
    assert res.documents == 5 and dict(res.rejected) == {"empty": 1, "not_utf8": 2, "unreadable": 2}
    assert [json.loads(m)["path"] for m in res.meta] == ["a.py", "big.py", "bom.py", "nul.c", "uni.py"]
