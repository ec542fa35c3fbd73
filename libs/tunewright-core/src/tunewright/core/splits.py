"""Reading a dataset version's split: canonical rows from JSONL or Parquet bytes.

A split (``DatasetVersion.splits[...]``) is the contract between ingest / synth, which write
it, and trainer / evaluator / synth, which read it: one object per row, JSONL
(``application/jsonl``) or Parquet (``application/vnd.apache.parquet``). pyarrow is imported
only for Parquet; services that read Parquet splits declare it.
"""

from __future__ import annotations

import io
import json
from typing import Any


def is_parquet(data: bytes, media_type: str = "") -> bool:
    return data.startswith(b"PAR1") or "parquet" in media_type


def read_split_rows(data: bytes, media_type: str = "") -> list[dict[str, Any]]:
    """The rows of a split, whichever of the two formats it is in."""
    if is_parquet(data, media_type):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - every reader service declares pyarrow
            raise RuntimeError("reading a Parquet split needs pyarrow installed") from exc
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
        return rows
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
