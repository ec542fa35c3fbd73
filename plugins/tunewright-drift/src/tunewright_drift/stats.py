"""The statistical tests behind the drift detectors, on plain numpy arrays.

- :func:`mmd_permutation_test`: kernel two-sample test (Gretton et al., "A Kernel Two-Sample
  Test", JMLR 2012) with a Gaussian kernel whose bandwidth is the median pairwise squared
  distance, and a permutation p-value, so it holds at any sample size and in any dimension.
- :func:`mix_shift_test`: chi-square test of homogeneity of two category count vectors.
- :func:`rate_increase_test`: one-sided Fisher exact test that a rate went up (exact, so it
  keeps its level on the small counts a window of feedback gives).
- :func:`ks_test`: two-sample Kolmogorov-Smirnov test (scipy).

Every p-value is P(statistic at least this extreme | no drift).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float


def mmd_permutation_test(
    distances: np.ndarray, n_reference: int, *, permutations: int = 1000, seed: int = 0
) -> tuple[TestResult, float]:
    """MMD² between the first ``n_reference`` points and the rest, from squared distances.

    ``distances`` is the (N, N) matrix of squared distances between all points (reference
    first). Returns the test result and the kernel bandwidth used.
    """
    n_total = distances.shape[0]
    n_current = n_total - n_reference
    if n_reference < 2 or n_current < 2:
        raise ValueError(f"need >= 2 points per sample, got {n_reference} and {n_current}")
    off_diagonal = distances[~np.eye(n_total, dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-distances / bandwidth)
    # MMD² (biased form) = s^T K s with s = 1/n on the reference and -1/m on the current
    # sample; a permutation test only needs it up to this one consistent definition
    signs = np.concatenate(
        [np.full(n_reference, 1 / n_reference), np.full(n_current, -1 / n_current)]
    )
    observed = float(signs @ kernel @ signs)
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, permutations, 200):
        batch = min(200, permutations - start)
        shuffled = np.stack([rng.permutation(signs) for _ in range(batch)])
        null = np.einsum("bi,ij,bj->b", shuffled, kernel, shuffled)
        exceed += int(np.sum(null >= observed - 1e-12))
    return TestResult(observed, (1 + exceed) / (1 + permutations)), bandwidth


def mix_shift_test(reference: Sequence[str], current: Sequence[str]) -> tuple[TestResult, dict]:
    """Chi-square homogeneity test of the category mix; returns per-category shares too."""
    ref_counts, cur_counts = Counter(reference), Counter(current)
    categories = sorted(set(ref_counts) | set(cur_counts))
    shares = {
        c: {
            "reference": ref_counts[c] / max(len(reference), 1),
            "current": cur_counts[c] / max(len(current), 1),
        }
        for c in categories
    }
    if len(categories) < 2 or not reference or not current:
        return TestResult(0.0, 1.0), shares
    table = np.array([[ref_counts[c] for c in categories], [cur_counts[c] for c in categories]])
    chi2, p_value, _dof, _expected = stats.chi2_contingency(table)
    return TestResult(float(chi2), float(p_value)), shares


def rate_increase_test(
    reference_hits: int, reference_total: int, current_hits: int, current_total: int
) -> TestResult:
    """One-sided Fisher exact test that the current rate is higher; statistic = difference."""
    if reference_total == 0 or current_total == 0:
        return TestResult(0.0, 1.0)
    table = [
        [current_hits, current_total - current_hits],
        [reference_hits, reference_total - reference_hits],
    ]
    _odds, p_value = stats.fisher_exact(table, alternative="greater")
    difference = current_hits / current_total - reference_hits / reference_total
    return TestResult(float(difference), float(p_value))


def ks_test(reference: Sequence[float], current: Sequence[float]) -> TestResult:
    if len(reference) < 2 or len(current) < 2:
        return TestResult(0.0, 1.0)
    result = stats.ks_2samp(reference, current)
    return TestResult(float(result.statistic), float(result.pvalue))
