"""The curation plugin: discovered through its entry point, every filter reason code, every
recognizer on real presidio."""

from __future__ import annotations

from typing import Any

import pytest
from tunewright_curation import recognizers

from tunewright.core.plugins import PluginManager, Registries


@pytest.fixture(scope="module")
def registries() -> Registries:
    return PluginManager().load()


def _check(
    registries: Registries, name: str, texts: list[tuple[str, str]], **params: Any
) -> str | None:
    check = registries.curation_filters.get(name).factory(**params)
    return check(texts, {})  # type: ignore[no-any-return]


GOOD = [
    ("messages.user", "My AcmeCRM export to CSV is empty since the update, what can I do?"),
    ("messages.assistant", "Select at least one column in the export dialog, then export again."),
]


def test_registered_through_the_entry_point(registries: Registries) -> None:
    assert {"length", "language", "repetition", "junk", "topic"} <= set(
        registries.curation_filters.names()
    )
    assert registries.curation_filters.get("length").plugin == "curation"
    assert {"street_address", "account_id", "card_2series", "salutation_name"} <= set(
        registries.pii_recognizers.names()
    )


@pytest.mark.parametrize(
    ("name", "texts", "params", "reason"),
    [
        ("length", [("messages.user", "hi"), ("messages.assistant", "ok")], {}, "too_short"),
        ("length", GOOD, {"max_chars": 50}, "too_long"),
        ("length", [GOOD[0], ("messages.assistant", "k")], {}, "response_too_short"),
        ("language", [("messages.user", "Bonjour, je ne peux plus me connecter à mon compte depuis hier soir.")], {}, "lang_fr"),
        ("repetition", [("messages.user", "spam spam spam spam spam spam spam spam eggs")], {}, "repeated_words"),
        ("repetition", [("messages.assistant", "Restart.\nRestart.\nRestart.\nRestart.")], {}, "repeated_lines"),
        ("junk", [("messages.user", "yo app broke lol fix it asap")], {}, "slang"),
        ("junk", [("messages.user", "lorem ipsum dolor sit amet")], {}, "boilerplate"),
        ("junk", [("messages.user", "1234 5678 !!!! ????")], {}, "no_letters"),
        ("topic", [("messages.user", "Who won the football game last night?")], {"terms": ["acme"]}, "off_topic"),
    ],
)  # fmt: skip
def test_each_filter_reason_code(
    registries: Registries,
    name: str,
    texts: list[tuple[str, str]],
    params: dict[str, Any],
    reason: str,
) -> None:
    assert _check(registries, name, texts, **params) == reason
    assert (
        _check(registries, name, GOOD, **({"terms": ["acmecrm"]} if name == "topic" else {}))
        is None
    )


def test_bad_params_are_value_errors(registries: Registries) -> None:
    with pytest.raises(ValueError, match="min_chars"):
        registries.curation_filters.get("length").factory(min_chars=10, max_chars=5)
    with pytest.raises(ValueError, match="terms"):
        registries.curation_filters.get("topic").factory(terms=[])


@pytest.mark.parametrize(
    ("factory", "text", "found"),
    [
        (recognizers.street_address, "Our office is at 1200 Lake View Drive, Austin, TX 78701.", "1200 Lake View Drive, Austin, TX 78701"),
        (recognizers.account_id, "Our account id is ACCT-938234.", "ACCT-938234"),
        (recognizers.card_2series, "The card is 2221 0000 0000 0009.", "2221 0000 0000 0009"),
        (recognizers.salutation_name, "Hi Lukas, thanks for writing.", "Lukas"),
        (recognizers.salutation_name, "Best regards,\nEmma Jensen", "Emma Jensen"),
    ],
)  # fmt: skip
def test_recognizers_find_what_presidio_misses(factory: Any, text: str, found: str) -> None:
    recognizer = factory()
    results = recognizer.analyze(text, recognizer.supported_entities, None)
    assert found in {text[r.start : r.end] for r in results}


def test_card_recognizer_checks_luhn() -> None:
    recognizer = recognizers.card_2series()
    results = recognizer.analyze("Order 2221 0000 0000 0001 shipped.", ["CREDIT_CARD"], None)
    assert not [r for r in results if r.score > 0]
