"""Shared pytest setup: tests run on CPU; multi-rank tests use gloo through torchrun."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
