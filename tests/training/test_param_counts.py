"""Exact parameter counts of the full-size flavors, from the real Megatron-Core model built on
the meta device (DESIGN.md §2), in a process of its own so no weight can hide in the test."""

import json
import subprocess
import sys

from tests.training.launch import REPO

EXPECTED = {  # DESIGN.md §2 (Llama 2 / Code Llama shapes, vocab padding excluded)
    "codellama-7b": 6_738_546_688,
    "codellama-13b": 13_016_028_160,
    "codellama-34b": 33_743_970_304,
    "codellama-70b": 68_976_910_336,
}

SCRIPT = """
import json, resource
from megacode.models import parameter_count
counts = {name: parameter_count(name) for name in %r}
print(json.dumps({"counts": counts, "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_full_size_parameter_counts_without_memory():
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT % list(EXPECTED)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["counts"] == EXPECTED
    # 70B in fp32 would be 276 GB; the whole process stays far below one layer of it.
    assert result["max_rss_kb"] < 2 * 1024 * 1024, result["max_rss_kb"]


def test_flavor_formula_matches_built_model():
    from megacode.config import FLAVORS

    for name, count in EXPECTED.items():
        assert FLAVORS[name].parameter_count() == count
