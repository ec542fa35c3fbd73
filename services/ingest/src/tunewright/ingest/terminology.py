"""Terminology standardisation: replace variant spellings with the canonical term.

A glossary maps variant -> canonical (``"Acme CRM Pro": AcmeCRM``). Matching is
case-insensitive on whole words, longest variant first, so ``Acme CRM Pro`` wins over
``Acme CRM``. Counts per canonical term go to the curation report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import yaml

from tunewright.core.errors import InvalidArgument


def load_glossary(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"glossary {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise InvalidArgument(f"glossary {path} must map variant strings to canonical strings")
    return data


class Glossary:
    def __init__(self, terms: Mapping[str, str]) -> None:
        self.canonical = {variant.lower(): canon for variant, canon in terms.items() if variant}
        self.replacements: Counter[str] = Counter()
        if self.canonical:
            alternatives = sorted(self.canonical, key=len, reverse=True)
            self._pattern: re.Pattern[str] | None = re.compile(
                r"(?<![\w-])(?:" + "|".join(re.escape(v) for v in alternatives) + r")(?![\w-])",
                re.IGNORECASE,
            )
        else:
            self._pattern = None

    @property
    def terms(self) -> set[str]:
        """Canonical terms: never PII (they go on the scrubber's allow-list)."""
        return set(self.canonical.values())

    def _replace(self, match: re.Match[str]) -> str:
        canon = self.canonical[match.group().lower()]
        if match.group() != canon:
            self.replacements[canon] += 1
        return canon

    def apply(self, text: str) -> str:
        return self._pattern.sub(self._replace, text) if self._pattern else text
