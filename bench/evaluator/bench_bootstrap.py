"""Bootstrap CI of corpus BLEU / chrF: summing sacrebleu's per-sample statistics vs re-scoring
every resampled corpus with sacrebleu (the baseline, measured in the same run on the same draws).

    .venv/bin/python bench/evaluator/bench_bootstrap.py [--samples 60] [--resamples 1000]

Prints both times, their ratio and the largest difference between the two (0: same values).
"""

from __future__ import annotations

import argparse
import random
import time

from tunewright.core.plugins import PluginManager
from tunewright.evaluator import comparison
from tunewright.evaluator.comparison import Metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="held-out samples (demo: 60)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--words", type=int, default=160, help="words per answer (tickets ~160)")
    args = parser.parse_args()
    registry = PluginManager().load().metrics
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    refs = [" ".join(rng.choices(vocab, k=args.words)) for _ in range(args.samples)]
    preds = [" ".join(rng.choices(vocab, k=args.words - 10)) for _ in range(args.samples)]
    idx = comparison._indices(args.samples, args.resamples, 0)
    for name in ("bleu", "chrf"):
        metric = Metric(name, registry.get(name).factory(), True)
        baseline = Metric(name, metric.fn.__call__, True)  # no statistics: re-scores each resample
        start = time.perf_counter()
        fast = comparison._resampled(metric, preds, refs, idx)
        t_fast = time.perf_counter() - start
        start = time.perf_counter()
        slow = comparison._resampled(baseline, preds, refs, idx)
        t_slow = time.perf_counter() - start
        diff = max(abs(a - b) for a, b in zip(fast, slow, strict=True))
        print(
            f"{name}: {args.samples} samples x {args.resamples} resamples: statistics "
            f"{t_fast:.2f} s, re-scoring {t_slow:.2f} s, ratio {t_slow / t_fast:.0f}x, "
            f"max difference {diff:.1e}"
        )


if __name__ == "__main__":
    main()
