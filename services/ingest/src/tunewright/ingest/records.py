"""One canonical record form for every input format, and the parsers that produce it.

Input shapes (``RecordFormat``): OpenAI/TRL chat ``messages``; ``prompt``/``completion``;
Alpaca ``instruction``/``input``/``output``; ShareGPT ``conversations`` (``from``/``value``);
preference ``prompt``/``chosen``/``rejected`` (strings or message lists); OpenAI DPO
``input``/``preferred_output``/``non_preferred_output``; Anthropic HH transcripts
(``"\\n\\nHuman: … \\n\\nAssistant: …"`` in ``chosen``/``rejected``); unpaired
``completion`` + ``label`` (KTO).

The canonical form is TRL's conversational layout: :attr:`Record.messages` holds the
conversation (SFT) or the prompt turns (preference, unpaired); :attr:`Record.chosen` /
:attr:`Record.rejected` or :attr:`Record.completion` + :attr:`Record.label` hold the rest.
Columns that are not part of the format (``ticket_id``, ``category``, ...) ride along in
:attr:`Record.meta` as strings.

A row that cannot become a valid record raises :class:`RowRejected` with a reason code from
:class:`Reason`; the pipeline quarantines it with its line number.

Size limits: :data:`DEFAULT_MAX_CHARS` is the longest row (all its texts, in characters) a
server accepts unless the operator sets ``ingest.max_chars``; JSON (a line, a CSV cell holding
a message list) is parsed by :func:`load_json`, which refuses nesting deeper than
:data:`MAX_JSON_DEPTH` and lone surrogates, so no later step recurses or fails to encode.
"""

from __future__ import annotations

import enum
import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

#: rows longer than this (characters of all their texts) are quarantined ``over_length``
#: unless the operator sets ``ingest.max_chars``; a job's ``max_chars`` may only lower it
DEFAULT_MAX_CHARS: Final = 200_000
#: JSON nested deeper than this is not a record (json would recurse towards the stack limit)
MAX_JSON_DEPTH: Final = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


class Reason(enum.StrEnum):
    """Why a row was quarantined (stable codes: reports and tests switch on them)."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_CSV = "invalid_csv"
    #: a JSONL line, a CSV record or a Parquet row (as JSON) over ``ingest.max_line_bytes``
    LINE_TOO_LONG = "line_too_long"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_FORMAT = "unknown_format"
    FORMAT_MISMATCH = "format_mismatch"
    MISSING_FIELD = "missing_field"
    EMPTY_FIELD = "empty_field"
    BAD_TYPE = "bad_type"
    BAD_ROLE = "bad_role"
    BAD_ROLE_ORDER = "bad_role_order"
    BAD_LABEL = "bad_label"
    OVER_LENGTH = "over_length"
    PII_SCRUB_FAILED = "pii_scrub_failed"


class RowRejected(Exception):
    """A row that cannot be accepted; ``detail`` never quotes the row's contents."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class RecordFormat(enum.StrEnum):
    MESSAGES = "messages"
    PROMPT_COMPLETION = "prompt_completion"
    ALPACA = "alpaca"
    SHAREGPT = "sharegpt"
    PREFERENCE = "preference"
    OPENAI_DPO = "openai_dpo"
    HH_TRANSCRIPT = "hh_transcript"
    UNPAIRED = "unpaired"


class Kind(enum.StrEnum):
    SFT = "sft"
    PREFERENCE = "preference"
    UNPAIRED = "unpaired"


KIND_OF_FORMAT: Mapping[RecordFormat, Kind] = {
    RecordFormat.MESSAGES: Kind.SFT,
    RecordFormat.PROMPT_COMPLETION: Kind.SFT,
    RecordFormat.ALPACA: Kind.SFT,
    RecordFormat.SHAREGPT: Kind.SFT,
    RecordFormat.PREFERENCE: Kind.PREFERENCE,
    RecordFormat.OPENAI_DPO: Kind.PREFERENCE,
    RecordFormat.HH_TRANSCRIPT: Kind.PREFERENCE,
    RecordFormat.UNPAIRED: Kind.UNPAIRED,
}

ROLES = frozenset({"system", "user", "assistant", "tool"})
SHAREGPT_ROLES: Mapping[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "tool": "tool",
}
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Record:
    """A validated row in canonical form (see the module docstring)."""

    kind: Kind
    messages: tuple[Turn, ...]
    chosen: tuple[Turn, ...] = ()
    rejected: tuple[Turn, ...] = ()
    completion: tuple[Turn, ...] = ()
    label: bool | None = None
    meta: Mapping[str, str] = field(default_factory=dict)

    def texts(self) -> Iterator[tuple[str, str]]:
        """``(field, text)`` for every piece of text; field names like ``messages.user``."""
        for name in ("messages", "chosen", "rejected", "completion"):
            for turn in getattr(self, name):
                yield f"{name}.{turn.role}", turn.content

    def all_text(self) -> str:
        return "\n".join(text for _, text in self.texts())

    def with_texts(self, texts: Sequence[str]) -> Record:
        """The same record with its texts replaced, in :meth:`texts` order."""
        it = iter(texts)

        def swap(turns: tuple[Turn, ...]) -> tuple[Turn, ...]:
            return tuple(Turn(t.role, next(it)) for t in turns)

        # keyword order = texts() order
        return replace(
            self,
            messages=swap(self.messages),
            chosen=swap(self.chosen),
            rejected=swap(self.rejected),
            completion=swap(self.completion),
        )

    def to_json(self) -> dict[str, Any]:
        """TRL conversational layout plus the meta columns (what the JSONL export holds)."""

        def turns(ts: tuple[Turn, ...]) -> list[dict[str, str]]:
            return [{"role": t.role, "content": t.content} for t in ts]

        out: dict[str, Any]
        if self.kind is Kind.SFT:
            out = {"messages": turns(self.messages)}
        elif self.kind is Kind.PREFERENCE:
            out = {
                "prompt": turns(self.messages),
                "chosen": turns(self.chosen),
                "rejected": turns(self.rejected),
            }
        else:
            out = {
                "prompt": turns(self.messages),
                "completion": turns(self.completion),
                "label": self.label,
            }
        for key, value in self.meta.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_json(cls, kind: Kind, data: Mapping[str, Any]) -> Record:
        """Inverse of :meth:`to_json` (used for the pipeline's own spool files)."""
        parse = _parse_canonical_turns
        core = {"messages", "prompt", "chosen", "rejected", "completion", "label"}
        meta = {k: v for k, v in data.items() if k not in core}
        if kind is Kind.SFT:
            return cls(kind, parse(data["messages"]), meta=meta)
        if kind is Kind.PREFERENCE:
            return cls(
                kind,
                parse(data["prompt"]),
                chosen=parse(data["chosen"]),
                rejected=parse(data["rejected"]),
                meta=meta,
            )
        return cls(
            kind,
            parse(data["prompt"]),
            completion=parse(data["completion"]),
            label=data["label"],
            meta=meta,
        )


def _parse_canonical_turns(items: Sequence[Mapping[str, str]]) -> tuple[Turn, ...]:
    return tuple(Turn(t["role"], t["content"]) for t in items)


def load_json(text: str) -> Any:
    """:func:`json.loads` for untrusted rows; :class:`ValueError` when the text is not JSON,
    nests deeper than :data:`MAX_JSON_DEPTH`, or holds a lone surrogate (a ``\\ud800``
    escape: such a string cannot be written as UTF-8)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH}") from None
    # walk only when there can be something to find: enough brackets, or a \u escape
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH or "\\u" in text:
        _check_json_value(value)
    return value


def _check_json_value(value: Any) -> None:
    """Depth and surrogates, without recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff escape)")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH}")
        if isinstance(item, dict):
            stack += [(key, depth) for key in item]
            stack += [(child, depth + 1) for child in item.values()]
        else:
            stack += [(child, depth + 1) for child in item]


# --- detection ---------------------------------------------------------------------------


def detect_format(row: Mapping[str, Any]) -> RecordFormat:
    """The record format a row looks like; :class:`RowRejected` (unknown_format) otherwise."""
    keys = row.keys()
    if "messages" in keys:
        return RecordFormat.MESSAGES
    if "conversations" in keys:
        return RecordFormat.SHAREGPT
    if "preferred_output" in keys or "non_preferred_output" in keys:
        return RecordFormat.OPENAI_DPO
    if "chosen" in keys or "rejected" in keys:
        if "prompt" in keys:
            return RecordFormat.PREFERENCE
        return RecordFormat.HH_TRANSCRIPT
    if "label" in keys and "completion" in keys:
        return RecordFormat.UNPAIRED
    if "instruction" in keys:
        return RecordFormat.ALPACA
    if "prompt" in keys or "completion" in keys:
        return RecordFormat.PROMPT_COMPLETION
    raise RowRejected(Reason.UNKNOWN_FORMAT, f"no known record layout in columns {sorted(keys)}")


def matches(fmt: RecordFormat, row: Mapping[str, Any]) -> bool:
    try:
        return detect_format(row) is fmt
    except RowRejected:
        return False


# --- parsing -----------------------------------------------------------------------------


def _require(row: Mapping[str, Any], name: str) -> Any:
    if name not in row or row[name] is None:
        raise RowRejected(Reason.MISSING_FIELD, f"field {name!r} is missing")
    return row[name]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RowRejected(Reason.BAD_TYPE, f"field {name!r} must be a string")
    if not value.strip():
        raise RowRejected(Reason.EMPTY_FIELD, f"field {name!r} is empty")
    return value


def _turns(value: Any, name: str, *, role_key: str = "role", content_key: str = "content",
           roles: Mapping[str, str] | None = None) -> tuple[Turn, ...]:  # fmt: skip
    if isinstance(value, str):  # CSV cells carry message lists as JSON text
        try:
            value = load_json(value)
        except ValueError:
            raise RowRejected(Reason.BAD_TYPE, f"field {name!r} must be a list of turns") from None
    if not isinstance(value, list):
        raise RowRejected(Reason.BAD_TYPE, f"field {name!r} must be a list of turns")
    if not value:
        raise RowRejected(Reason.EMPTY_FIELD, f"field {name!r} has no turns")
    turns = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(item, Mapping):
            raise RowRejected(Reason.BAD_TYPE, f"{where} must be an object")
        raw_role = _require(item, role_key)
        if not isinstance(raw_role, str):
            raise RowRejected(Reason.BAD_ROLE, f"{where}.{role_key} must be a string")
        role = (roles or {r: r for r in ROLES}).get(raw_role.lower())
        if role is None:
            raise RowRejected(Reason.BAD_ROLE, f"{where} has unknown role {raw_role[:20]!r}")
        turns.append(Turn(role, _text(_require(item, content_key), f"{where}.{content_key}")))
    return tuple(turns)


def _check_conversation(turns: Sequence[Turn], name: str, *, ends_with_assistant: bool) -> None:
    """system? then user/assistant alternating, starting with user (tool turns after assistant)."""
    body = list(turns)
    if body and body[0].role == "system":
        body = body[1:]
    if any(t.role == "system" for t in body):
        raise RowRejected(Reason.BAD_ROLE_ORDER, f"{name}: system turn after the first turn")
    dialogue = [t for t in body if t.role != "tool"]
    if not dialogue or dialogue[0].role != "user":
        raise RowRejected(Reason.BAD_ROLE_ORDER, f"{name}: must start with a user turn")
    for prev, cur in itertools.pairwise(dialogue):
        if prev.role == cur.role:
            raise RowRejected(Reason.BAD_ROLE_ORDER, f"{name}: two {cur.role} turns in a row")
    if ends_with_assistant and dialogue[-1].role != "assistant":
        raise RowRejected(Reason.BAD_ROLE_ORDER, f"{name}: must end with an assistant turn")
    if not ends_with_assistant and dialogue[-1].role != "user":
        raise RowRejected(Reason.BAD_ROLE_ORDER, f"{name}: prompt must end with a user turn")


def _prompt_turns(value: Any, name: str) -> tuple[Turn, ...]:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return (Turn("user", _text(value, name)),)
    turns = _turns(value, name)
    _check_conversation(turns, name, ends_with_assistant=False)
    return turns


def _answer_turns(value: Any, name: str) -> tuple[Turn, ...]:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return (Turn("assistant", _text(value, name)),)
    turns = _turns(value, name)
    if any(t.role != "assistant" for t in turns):
        raise RowRejected(Reason.BAD_ROLE, f"{name}: only assistant turns allowed")
    return turns


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise RowRejected(Reason.BAD_LABEL, "label must be a boolean (true/false, 1/0)")


def _hh_split(transcript: str, name: str) -> tuple[tuple[Turn, ...], Turn]:
    """``\\n\\nHuman: a\\n\\nAssistant: b`` -> prompt turns and the final assistant turn."""
    text = transcript if transcript.startswith("\n\n") else "\n\n" + transcript
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 5:
        raise RowRejected(Reason.BAD_ROLE_ORDER, f"{name}: not a Human/Assistant transcript")
    turns = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        turns.append(Turn(role, _text(content.strip(), name)))
    _check_conversation(turns, name, ends_with_assistant=True)
    return tuple(turns[:-1]), turns[-1]


_FORMAT_FIELDS: Mapping[RecordFormat, frozenset[str]] = {
    RecordFormat.MESSAGES: frozenset({"messages"}),
    RecordFormat.PROMPT_COMPLETION: frozenset({"prompt", "completion"}),
    RecordFormat.ALPACA: frozenset({"instruction", "input", "output"}),
    RecordFormat.SHAREGPT: frozenset({"conversations"}),
    RecordFormat.PREFERENCE: frozenset({"prompt", "chosen", "rejected"}),
    RecordFormat.OPENAI_DPO: frozenset({"input", "preferred_output", "non_preferred_output"}),
    RecordFormat.HH_TRANSCRIPT: frozenset({"chosen", "rejected"}),
    RecordFormat.UNPAIRED: frozenset({"prompt", "completion", "label"}),
}


def _meta(row: Mapping[str, Any], fmt: RecordFormat) -> dict[str, str]:
    out = {}
    for key, value in row.items():
        if key in _FORMAT_FIELDS[fmt] or value is None:
            continue
        # default=str: Parquet cells can be bytes, dates, decimals
        out[str(key)] = (
            value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        )
    return out


def parse_record(row: Mapping[str, Any], fmt: RecordFormat) -> Record:
    """Validate ``row`` as ``fmt`` and return its canonical form, or raise :class:`RowRejected`."""
    meta = _meta(row, fmt)
    if fmt is RecordFormat.MESSAGES:
        turns = _turns(_require(row, "messages"), "messages")
        _check_conversation(turns, "messages", ends_with_assistant=True)
        return Record(Kind.SFT, turns, meta=meta)
    if fmt is RecordFormat.SHAREGPT:
        turns = _turns(
            _require(row, "conversations"),
            "conversations",
            role_key="from",
            content_key="value",
            roles=SHAREGPT_ROLES,
        )
        _check_conversation(turns, "conversations", ends_with_assistant=True)
        return Record(Kind.SFT, turns, meta=meta)
    if fmt is RecordFormat.PROMPT_COMPLETION:
        prompt = _prompt_turns(_require(row, "prompt"), "prompt")
        return Record(Kind.SFT, prompt + _answer_turns(_require(row, "completion"), "completion"),
                      meta=meta)  # fmt: skip
    if fmt is RecordFormat.ALPACA:
        instruction = _text(_require(row, "instruction"), "instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise RowRejected(Reason.BAD_TYPE, "field 'input' must be a string")
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        output = _text(_require(row, "output"), "output")
        return Record(Kind.SFT, (Turn("user", user), Turn("assistant", output)), meta=meta)
    if fmt is RecordFormat.PREFERENCE:
        return Record(
            Kind.PREFERENCE,
            _prompt_turns(_require(row, "prompt"), "prompt"),
            chosen=_answer_turns(_require(row, "chosen"), "chosen"),
            rejected=_answer_turns(_require(row, "rejected"), "rejected"),
            meta=meta,
        )
    if fmt is RecordFormat.OPENAI_DPO:
        source = _require(row, "input")
        if isinstance(source, str):
            try:
                source = load_json(source)
            except ValueError:
                raise RowRejected(Reason.BAD_TYPE, "field 'input' must be an object") from None
        if not isinstance(source, Mapping):
            raise RowRejected(Reason.BAD_TYPE, "field 'input' must be an object")
        prompt = _turns(_require(source, "messages"), "input.messages")
        _check_conversation(prompt, "input.messages", ends_with_assistant=False)
        return Record(
            Kind.PREFERENCE,
            prompt,
            chosen=_answer_turns(_require(row, "preferred_output"), "preferred_output"),
            rejected=_answer_turns(_require(row, "non_preferred_output"), "non_preferred_output"),
            meta=meta,
        )
    if fmt is RecordFormat.HH_TRANSCRIPT:
        chosen_prompt, chosen = _hh_split(_text(_require(row, "chosen"), "chosen"), "chosen")
        rejected_prompt, rejected = _hh_split(
            _text(_require(row, "rejected"), "rejected"), "rejected"
        )
        if chosen_prompt != rejected_prompt:
            raise RowRejected(Reason.BAD_ROLE_ORDER, "chosen and rejected have different prompts")
        return Record(
            Kind.PREFERENCE, chosen_prompt, chosen=(chosen,), rejected=(rejected,), meta=meta
        )
    # unpaired
    prompt_value = row.get("prompt")
    prompt = _prompt_turns(prompt_value, "prompt") if prompt_value is not None else ()
    return Record(
        Kind.UNPAIRED,
        prompt,
        completion=_answer_turns(_require(row, "completion"), "completion"),
        label=_label(_require(row, "label")),
        meta=meta,
    )
