"""Property: whatever the input, every row ends in exactly one fate and the counts add up."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewright.core.plugins import Registries
from tunewright.ingest.pii import DatasetScrubber, PiiConfig, PiiEngine
from tunewright.ingest.pipeline import CurationConfig, curate
from tunewright.ingest.quarantine import QuarantineWriter

ROLES = st.sampled_from(["user", "assistant", "system", "tool", "robot", ""])
TEXT = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        ["How do I reset my AcmeCRM password, Maria Lopez?", "Open Settings and press Reset.",
         "lol fix it", "Bonjour, je ne peux pas me connecter.", "call 212-555-0199"]
    ),
)  # fmt: skip
TURN = st.fixed_dictionaries({"role": ROLES, "content": st.one_of(TEXT, st.integers(), st.none())})
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ROW = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(TURN, max_size=4)}),
    st.fixed_dictionaries({"prompt": TEXT, "completion": TEXT}),
    st.fixed_dictionaries({"prompt": TEXT, "chosen": TEXT, "rejected": TEXT}),
    st.fixed_dictionaries({"completion": TEXT, "label": JSON_VALUE}),
    st.fixed_dictionaries({"instruction": TEXT, "output": TEXT}),
    st.dictionaries(st.sampled_from(["messages", "prompt", "chosen", "x"]), JSON_VALUE, max_size=3),
)


def _line(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value.replace(b"\n", b" ")
    return json.dumps(value).encode()


LINES = st.lists(st.one_of(ROW, JSON_VALUE, st.binary(max_size=40)), max_size=25)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=LINES, dedup=st.booleans(), eval_fraction=st.sampled_from([0.0, 0.3]))
def test_counts_always_add_up(
    lines: list[Any],
    dedup: bool,
    eval_fraction: float,
    registries: Registries,
    pii_engine: PiiEngine,
    pii_config: PiiConfig,
) -> None:
    filters = [(n, registries.curation_filters.get(n).factory()) for n in ("length", "junk")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "junk.jsonl"
        source.write_bytes(b"\n".join(_line(v) for v in lines) + b"\n")
        config = CurationConfig(
            filters=filters,
            pii=pii_config,
            exact_dedup=dedup,
            near_dedup=dedup,
            eval_fraction=eval_fraction,
            max_chars=200,
        )
        result = curate(
            source,
            config,
            work_dir=work / "out",
            quarantine=QuarantineWriter(work / "q"),
            scrubber=DatasetScrubber(pii_engine, pii_config),
        )
        c = result.counts
        non_blank = sum(1 for v in lines if _line(v).strip())
        assert c.total == non_blank
        assert c.accepted + c.quarantined + c.duplicates + c.filtered == c.total
        assert sum(c.quarantined_by_reason.values()) == c.quarantined
        assert sum(c.filtered_by_filter.values()) == c.filtered
        assert c.train + c.eval == c.accepted
        written = sum(
            len(result.files[f"{s}.jsonl"].read_text().splitlines()) for s in ("train", "eval")
        )
        assert written == c.accepted
        row_log = result.files["row_log.jsonl"].read_text().splitlines()
        assert len(row_log) == c.total - c.accepted
