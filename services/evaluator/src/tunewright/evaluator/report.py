"""Evaluation reports: JSON for machines, Markdown and HTML for people, PNG plots.

The HTML report shows the verdict with its reasons, every metric per model with its CI, every
delta with its CI, the plots (embedded), and the per-sample outputs side by side. Plots: the
deltas with their 95% CIs (one bar per metric and baseline, the zero line drawn), and the
candidate's training loss curve when the training run's metrics log is given.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tunewright.evaluator.comparison import Delta, MetricValue
from tunewright.evaluator.gate import Verdict


@dataclass(frozen=True)
class Sample:
    prompt: str
    reference: str
    outputs: Mapping[str, str]  # role -> generated text


@dataclass(frozen=True)
class Report:
    run_id: str
    candidate: str
    values: Sequence[MetricValue]
    deltas: Sequence[Delta]
    verdict: Verdict
    samples: Sequence[Sample]
    loss_curve: Sequence[tuple[float, float]] = ()  # (step, loss)
    #: counts behind a number, by "metric/baseline" (judge: wins, ties, losses, unparseable)
    details: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "candidate": self.candidate,
            "verdict": asdict(self.verdict),
            "metrics": [asdict(v) for v in self.values],
            "deltas": [asdict(d) for d in self.deltas],
            "samples": [
                {"prompt": s.prompt, "reference": s.reference, "outputs": dict(s.outputs)}
                for s in self.samples
            ],
            "loss_curve": [list(point) for point in self.loss_curve],
            "details": {key: dict(value) for key, value in self.details.items()},
        }


def deltas_png(deltas: Sequence[Delta]) -> bytes:
    """One panel per metric and baseline (metrics have different scales): the improvement
    over the baseline (in the better direction) with its 95% CI, and the zero line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(deltas), 1, figsize=(7, 1.1 * len(deltas) + 0.8), squeeze=False)
    for ax, d in zip(axes[:, 0], deltas, strict=True):
        low, high = d.improvement_ci
        colour = "#2e7d32" if low > 0 else "#c62828" if high < 0 else "#757575"
        ax.errorbar(
            [d.improvement], [0], xerr=[[d.improvement - low], [high - d.improvement]],
            fmt="o", color=colour, capsize=6, markersize=7,
        )  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8)
        span = max(abs(low), abs(high), abs(d.improvement)) * 1.25
        if span < 1e-9:  # all zero (e.g. identical models): a unit axis, not a 1e-9 one
            span = 1.0
        ax.set_xlim(-span, span)
        ax.set_yticks([])
        direction = "" if d.higher_is_better else "\n(lower is better)"
        ax.set_ylabel(
            f"{d.metric}\nvs {d.baseline}{direction}", rotation=0, ha="right", va="center"
        )
    axes[-1, 0].set_xlabel("improvement over baseline, 95% CI (> 0 is better)")
    fig.suptitle("candidate vs baselines")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out.getvalue()


def loss_png(curve: Sequence[tuple[float, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([p[0] for p in curve], [p[1] for p in curve], color="#1565c0")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("candidate training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out.getvalue()


def markdown(report: Report) -> str:
    lines = [
        f"# Evaluation {report.run_id}",
        "",
        f"Candidate: `{report.candidate}` — **{'PASSED' if report.verdict.passed else 'FAILED'}**",
        "",
        *[f"- {reason}" for reason in report.verdict.reasons],
        "",
        "| model | metric | value | 95% CI | n |",
        "|---|---|---|---|---|",
        *[
            f"| {v.role} | {v.metric} | {v.value:.4f} | {v.ci_low:.4f}..{v.ci_high:.4f} | {v.n} |"
            for v in report.values
        ],
        "",
        "| metric | baseline | candidate | baseline value | delta | 95% CI |",
        "|---|---|---|---|---|---|",
        *[
            f"| {d.metric} | {d.baseline} | {d.candidate_value:.4f} | {d.baseline_value:.4f} | "
            f"{d.delta:+.4f} | {d.ci_low:+.4f}..{d.ci_high:+.4f} |"
            for d in report.deltas
        ],
    ]
    if report.details:
        lines += ["", "| metric / baseline | counts |", "|---|---|"]
        lines += [f"| {key} | {_counts(value)} |" for key, value in sorted(report.details.items())]
    if report.samples:
        roles = _roles(report)
        lines += [
            "",
            "## Samples",
            "",
            "| # | prompt | reference | " + " | ".join(roles) + " |",
            "|---" * (3 + len(roles)) + "|",
        ]
        for i, sample in enumerate(report.samples, 1):
            cells = [_md_cell(sample.prompt), _md_cell(sample.reference)]
            cells += [_md_cell(sample.outputs.get(role, "")) for role in roles]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _roles(report: Report) -> list[str]:
    """Candidate first, then the baselines in the order they were given."""
    roles = list(dict.fromkeys(role for s in report.samples for role in s.outputs))
    return sorted(roles, key=lambda role: role != "candidate")


def _md_cell(text: str, limit: int = 300) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return html.escape(text).replace("|", "\\|").replace("\n", "<br>")


def _counts(value: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in value.items())


def html_report(report: Report, images: Mapping[str, bytes]) -> str:
    esc = html.escape
    roles = _roles(report)
    status = "PASSED" if report.verdict.passed else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>tunewright evaluation {esc(report.run_id)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top;text-align:left}.pass{color:#2e7d32}.fail{color:#c62828}"
        "td.text{white-space:pre-wrap;max-width:350px}</style></head><body>",
        f"<h1>Evaluation {esc(report.run_id)}</h1>",
        f"<p>Candidate <code>{esc(report.candidate)}</code>: "
        f"<b class='{'pass' if report.verdict.passed else 'fail'}'>{status}</b></p>",
        "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in report.verdict.reasons) + "</ul>",
        "<h2>Metrics</h2><table><tr><th>model</th><th>metric</th><th>value</th><th>95% CI</th><th>n</th></tr>",
        *[
            f"<tr><td>{esc(v.role)}</td><td>{esc(v.metric)}</td><td>{v.value:.4f}</td>"
            f"<td>{v.ci_low:.4f} … {v.ci_high:.4f}</td><td>{v.n}</td></tr>"
            for v in report.values
        ],
        "</table><h2>Candidate vs baselines</h2><table><tr><th>metric</th><th>baseline</th>"
        "<th>delta</th><th>95% CI</th></tr>",
        *[
            f"<tr><td>{esc(d.metric)}</td><td>{esc(d.baseline)}</td><td>{d.delta:+.4f}</td>"
            f"<td>{d.ci_low:+.4f} … {d.ci_high:+.4f}</td></tr>"
            for d in report.deltas
        ],
        "</table>",
    ]
    if report.details:
        parts.append("<table><tr><th>metric / baseline</th><th>counts</th></tr>")
        parts += [
            f"<tr><td>{esc(key)}</td><td>{esc(_counts(value))}</td></tr>"
            for key, value in sorted(report.details.items())
        ]
        parts.append("</table>")
    for name, png in images.items():
        data = base64.b64encode(png).decode()
        parts.append(
            f"<h3>{esc(name)}</h3><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("<h2>Samples</h2><table><tr><th>#</th><th>prompt</th><th>reference</th>")
    parts += [f"<th>{esc(role)}</th>" for role in roles]
    parts.append("</tr>")
    for i, sample in enumerate(report.samples, 1):
        cells = "".join(
            f"<td class='text'>{esc(sample.outputs.get(role, ''))}</td>" for role in roles
        )
        parts.append(
            f"<tr><td>{i}</td><td class='text'>{esc(sample.prompt)}</td>"
            f"<td class='text'>{esc(sample.reference)}</td>{cells}</tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


def render(report: Report) -> dict[str, bytes]:
    """Every file of the report: report.json, report.md, report.html, deltas.png[, loss.png]."""
    images = {"deltas.png": deltas_png(report.deltas)} if report.deltas else {}
    if report.loss_curve:
        images["loss.png"] = loss_png(report.loss_curve)
    files = {
        "report.json": json.dumps(report.to_json(), indent=2).encode(),
        "report.md": markdown(report).encode(),
        "report.html": html_report(report, images).encode(),
    }
    files.update(images)
    return files
