"""Interactions as rows: what the monitor hands to ingest, what it reads back, what detectors
and the retraining pipeline get.

A window goes to ingest as JSONL chat records (``messages``: the user's prompt, the model's
answer) with a few meta columns: the interaction id, the feedback (thumbs, escalated,
resolved) and the allow-listed attributes (category, product, ...). The free-text feedback
comment and other attributes are dropped: meta columns are not PII-scrubbed. Ingest scrubs the
turns, and only its output (a dataset version) is ever read back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Interaction:
    """One logged interaction (raw: lives in memory only while its window is being closed)."""

    interaction_id: str
    model_version_id: str
    prompt: str
    response: str
    thumbs: int = 0
    escalated: bool = False
    resolved: bool = False
    at: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


def window_jsonl(interactions: Iterable[Interaction], attributes: Sequence[str]) -> bytes:
    lines = []
    for item in interactions:
        row: dict[str, Any] = {
            "messages": [
                {"role": "user", "content": item.prompt},
                {"role": "assistant", "content": item.response},
            ],
            "interaction_id": item.interaction_id,
            "thumbs": str(item.thumbs),
            "escalated": str(item.escalated).lower(),
            "resolved": str(item.resolved).lower(),
        }
        if item.at:
            row["at"] = item.at
        for key in attributes:
            value = item.attributes.get(key)
            if value:
                row.setdefault(key, str(value))
        lines.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal-style parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def detector_row(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A scrubbed split row (chat, prompt/completion or preference) as a detector row."""
    messages = row.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.startswith("["):
        prompt = json.loads(prompt)
    if isinstance(messages, list) and messages:
        users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        answers = [_text(m.get("content")) for m in messages if m.get("role") == "assistant"]
    elif isinstance(prompt, list):
        users = [_text(m.get("content")) for m in prompt if m.get("role") == "user"]
        answer = row.get("completion") or row.get("chosen") or []
        answers = [_text(m.get("content")) for m in answer] if isinstance(answer, list) else []
    elif isinstance(prompt, str):
        users, answers = [prompt], [_text(row.get("completion", ""))]
    else:
        return None
    if not users:
        return None
    return {
        "prompt": "\n".join(users),
        "response": answers[-1] if answers else "",
        "category": str(row.get("category") or ""),
        "thumbs": _int(row.get("thumbs")),
        "escalated": _bool(row.get("escalated")),
        "resolved": _bool(row.get("resolved")),
        "interaction_id": str(row.get("interaction_id") or ""),
        # written by the synth service; the training reference leaves such rows out
        "synthetic": _bool(row.get("synthetic")),
    }


def reference_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Training split rows as the reference of the content detectors.

    Synthetic rows (``synthetic: "true"``, written by the synth service to fill thin
    categories) are left out: they are not what users ask, and a reference padded with them
    would make the topic mix of real traffic differ by construction.
    """
    return [r for r in map(detector_row, rows) if r is not None and not r["synthetic"]]


def is_negative(row: Mapping[str, Any]) -> bool:
    return int(row.get("thumbs") or 0) < 0 or bool(row.get("escalated"))


def negatives_jsonl(rows: Iterable[Mapping[str, Any]], limit: int) -> tuple[bytes, int]:
    """Scrubbed negative interactions as chat records for the retraining pipeline to curate."""
    lines = []
    for row in rows:
        if not is_negative(row):
            continue
        record = {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["response"] or "(no answer)"},
            ],
            "interaction_id": row.get("interaction_id", ""),
            "category": row.get("category", ""),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
        if len(lines) >= limit:
            break
    return ("\n".join(lines) + "\n").encode(), len(lines)


def _int(value: Any) -> int:
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)
