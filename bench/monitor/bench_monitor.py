"""False-alarm rate and detection rate of the monitor's drift detectors; prints one JSON object.

Each trial is what the monitor does with one window of one model: the four detectors of
plugins/tunewright-drift (input-embedding, topic-mix vs the training rows; output, outcome vs
a baseline window), at family-wise level ``--alpha`` split over them (Bonferroni), exactly as
``tunewright.monitor.analysis.analyse`` runs them. Traffic comes from bench/monitor/trafficgen.py:

- same distribution: ``--windows`` windows from the training distribution, each with a fresh
  baseline window; a window with any detector firing is a false alarm. The JSON has the rate,
  its exact (Clopper-Pearson) 95% interval and each detector's own rate.
- shifted: ``--shifted-windows`` windows at each share of new-product traffic in ``--shifts``;
  the share of flagged windows is the detection rate (power).

The text is not PII-scrubbed here (both sides unscrubbed, so the comparison is like for like;
the e2e test runs the scrubbed path). Run::

    OMP_NUM_THREADS=1 .venv/bin/python bench/monitor/bench_monitor.py                 # ~4 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/monitor/bench_monitor.py --embedder minilm \
        --windows 40 --shifted-windows 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trafficgen import TrafficGenerator

from tunewright.core.plugins import PluginManager
from tunewright.monitor.analysis import NamedDetector, analyse


def rows(gen: TrafficGenerator, n: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": i["prompt"],
            "response": i["response"],
            "category": i["attributes"]["category"],
            **i["feedback"],
        }
        for i in gen.interactions(n)
    ]


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    low = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
    return low, high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=200, help="same-distribution windows")
    parser.add_argument("--shifted-windows", type=int, default=30, help="windows per shift")
    parser.add_argument("--shifts", default="0.05,0.1,0.2,0.5")
    parser.add_argument("--window-size", type=int, default=200)
    parser.add_argument("--training-rows", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.01, help="family-wise level")
    parser.add_argument("--embedder", default="hashing", choices=("hashing", "minilm"))
    parser.add_argument("--permutations", type=int, default=1000)
    args = parser.parse_args(argv)

    registry = PluginManager().load().drift_detectors
    params: dict[str, dict[str, Any]] = {
        "input-embedding": {"embedder": args.embedder, "permutations": args.permutations}
    }
    detectors = [
        NamedDetector(name, registry.get(name).factory(**params.get(name, {})))
        for name in ("input-embedding", "topic-mix", "output", "outcome")
    ]
    training = rows(TrafficGenerator(seed=1), args.training_rows)
    size = args.window_size

    def trial(seed: int, shift: float) -> list[dict[str, Any]]:
        baseline = rows(TrafficGenerator(seed=seed), size)
        current = rows(TrafficGenerator(seed=seed + 1, shift=shift), size)
        return analyse(
            detectors,
            training=training,
            baseline=baseline,
            current=current,
            family_alpha=args.alpha,
        )

    started = time.perf_counter()
    alarms, by_detector = 0, {d.name: 0 for d in detectors}
    for k in range(args.windows):
        results = trial(10_000 + 2 * k, 0.0)
        alarms += any(r["drifted"] for r in results)
        for r in results:
            by_detector[r["detector"]] += r["drifted"]
    same_s = time.perf_counter() - started
    low, high = clopper_pearson(alarms, args.windows)

    power: dict[str, Any] = {}
    for shift in (float(s) for s in args.shifts.split(",") if s.strip()):
        flagged, fired = 0, {d.name: 0 for d in detectors}
        for k in range(args.shifted_windows):
            results = trial(50_000 + 2 * k, shift)
            flagged += any(r["drifted"] for r in results)
            for r in results:
                fired[r["detector"]] += r["drifted"]
        power[str(shift)] = {
            "detection_rate": flagged / args.shifted_windows,
            "by_detector": {n: c / args.shifted_windows for n, c in fired.items()},
        }
    example = trial(90_000, 0.5)
    print(
        json.dumps(
            {
                "embedder": args.embedder,
                "window_size": size,
                "training_rows": args.training_rows,
                "family_alpha": args.alpha,
                "same_distribution": {
                    "windows": args.windows,
                    "false_alarms": alarms,
                    "false_alarm_rate": alarms / args.windows,
                    "ci95": [round(low, 4), round(high, 4)],
                    "by_detector": {n: c / args.windows for n, c in by_detector.items()},
                    "seconds_per_window": round(same_s / max(args.windows, 1), 3),
                },
                "shifted": power,
                "example_shifted_window": [
                    {k: r[k] for k in ("detector", "p_value", "alpha", "drifted", "summary")}
                    for r in example
                ],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
