"""Shared test helpers: tiny Llama-style SentencePiece models trained here, and test corpora.

No tokenizer can be downloaded in CI, so tests train small BPE models with Llama 2's settings
(byte fallback, identity normalization, no whitespace removal, split digits) on text found on
disk (the Python standard library's sources) plus generated multilingual text. Models are cached
in a temporary directory under a name that hashes their settings and the training text, so a
test session trains each model once.

Use from a test module (pytest runs with --import-mode=importlib, so add this folder to the path):

    sys.path.insert(0, str(Path(__file__).parent))
    from spm_fixtures import tiny_model, stdlib_texts, multilingual_texts
"""

from __future__ import annotations

import os
import random
import sysconfig
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from megacode.tokenizer.train import cached_llama_like

# Characters the multilingual text draws from: CJK, kana, Hangul, accented Latin, Greek,
# Cyrillic, emoji (4-byte UTF-8, some with ZWJ/variation selectors), and "☺", which Meta's
# encode_infilling relies on being a single piece.
_ALPHABETS = [
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生",
    "あいうえおかきくけこさしすせそアイウエオカキクケコ",
    "한국어문장입니다안녕하세요",
    "àáâãäåçèéêëìíîïñòóôõöùúûüýÿœæßÀÉÎÕÜ",
    "αβγδεζηθλμπσωΔΣΩ",
    "абвгдежзийклмнопрстуфхцчшщыэюяЖЩ",
    "😀😂🤖🚀🎉👍🏽👨‍💻❤️✨🔥",
    "☺",
]


def stdlib_files(max_bytes: Optional[int] = None, suffix: str = ".py") -> List[Path]:
    """Python standard library source files in a fixed order, up to `max_bytes` in total."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(suffix):
                continue
            path = Path(dirpath) / name
            size = path.stat().st_size
            if max_bytes is not None and total + size > max_bytes:
                return out
            out.append(path)
            total += size
    return out


def stdlib_texts(max_bytes: Optional[int] = None) -> List[str]:
    """Contents of `stdlib_files(max_bytes)` that decode as UTF-8 (a few test files do not)."""
    texts = []
    for path in stdlib_files(max_bytes):
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
    return texts


def multilingual_texts(n: int = 200, seed: int = 0, rare: bool = True) -> List[str]:
    """`n` generated documents mixing code, prose, CJK, emoji and accented Latin.

    With `rare`, some documents also carry characters a small model has never seen (random code
    points from several planes), which must go through byte fallback.
    """
    rng = random.Random(seed)
    words = ["def", "return", "class", "self", "import", "the", "value", "for", "in", "if", "None"]
    docs = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(3, 40)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(rng.choice(words))
            elif kind < 0.8:
                alpha = rng.choice(_ALPHABETS)
                parts.append("".join(rng.choice(alpha) for _ in range(rng.randint(1, 8))))
            elif kind < 0.9:
                parts.append(str(rng.randint(0, 10**6)))
            elif rare and kind < 0.95:
                lo, hi = rng.choice([(0x0400, 0x2FFF), (0xA000, 0xD7FF), (0xE000, 0xFFFD), (0x10000, 0x10FFFF)])
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 3))))
            else:
                parts.append(rng.choice(["\n", "\t", "    ", "  ", "\r\n", "\u3000", "\xa0"]))
        docs.append(rng.choice([" ", "", "\n"]).join(parts) if i % 3 else " ".join(parts))
    return docs


def train_model(
    sentences: Sequence[str], vocab_size: int, cache_dir: Optional[Path] = None, **overrides
) -> Path:
    """Train (once; cached by content hash) a Llama-style BPE model on `sentences`."""
    cache_dir = Path(cache_dir or Path(tempfile.gettempdir()) / "megacode-spm-cache")
    return cached_llama_like(sentences, vocab_size, cache_dir, num_threads=min(2, os.cpu_count() or 1), **overrides)


def training_sentences(max_bytes: int = 1_500_000) -> List[str]:
    """Lines of stdlib code plus multilingual text without rare characters."""
    lines = [ln for t in stdlib_texts(max_bytes) for ln in t.splitlines() if ln.strip()]
    lines += [ln for d in multilingual_texts(400, seed=1, rare=False) for ln in d.splitlines() if ln]
    # "☺" must be a piece of its own that merges with nothing, as in Llama 2 (Meta's
    # encode_infilling relies on it): give it many different neighbours, none of them frequent.
    rng = random.Random(2)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789(){}[]:;.,"
    lines += ["".join(rng.choice(letters) + "☺" for _ in range(40)) for _ in range(60)]
    return lines


def tiny_model(vocab_size: int = 2000, cache_dir: Optional[Path] = None) -> Path:
    """The shared tiny Llama-style model (a few seconds to train, then cached)."""
    return train_model(training_sentences(), vocab_size, cache_dir)
