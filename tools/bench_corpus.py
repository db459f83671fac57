"""The benchmarks' corpus: Python sources found on this machine (nothing can be downloaded here).

    from bench_corpus import python_sources          # tools/ on sys.path
    texts = python_sources()                          # the standard library, about 31 MB
    texts = python_sources(installed=True)            # plus the environment's packages, about 220 MB

Every .py file that decodes as UTF-8 (empty ones included: callers filter), in path order:
directories sorted, __pycache__ skipped, the stdlib's own site-packages skipped (it is the
interpreter's, not this environment's).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import List


def _walk(root: Path, skip=("site-packages", "__pycache__")) -> List[str]:
    texts = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            if name.endswith(".py"):
                try:
                    texts.append((Path(dirpath) / name).read_text(encoding="utf-8"))
                except (UnicodeDecodeError, OSError):
                    continue
    return texts


def python_sources(installed: bool = False) -> List[str]:
    """The stdlib's .py texts; with `installed`, followed by those of this environment's packages."""
    paths = sysconfig.get_paths()
    texts = _walk(Path(paths["stdlib"]))
    if installed:
        texts += _walk(Path(paths["purelib"]), skip=("__pycache__",))
    return texts
