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
        # street lines of other countries, with the postal block that follows them
        (recognizers.street_address, "Send it to Lindenstraße 14b, 04109 Leipzig please", "Lindenstraße 14b, 04109 Leipzig"),
        (recognizers.street_address, "Osoite: Hämeenkatu 3 B 12\n33100 Tampere", "Hämeenkatu 3 B 12\n33100 Tampere"),
        (recognizers.street_address, "Via Garibaldi 21, 10122 Torino", "Via Garibaldi 21, 10122 Torino"),
        (recognizers.street_address, "c/o 8 avenue Victor Hugo, 69002 Lyon", "8 avenue Victor Hugo, 69002 Lyon"),
        (recognizers.street_address, "new place: calle del pez 7, madrid", "calle del pez 7"),
        (recognizers.street_address, "We moved to 77 E 5th Ave Apt 2B\nDenver, CO 80203", "77 E 5th Ave Apt 2B\nDenver, CO 80203"),
        (recognizers.postal_code, "Postcode EH1 1YZ", "EH1 1YZ"),
        (recognizers.labelled_field, "Full name: Tomasz Zielinski\nCity: Gdansk", "Tomasz Zielinski"),
        (recognizers.labelled_field, '{"customer_name": "Ines Duarte", "zip": "4050-123"}', "4050-123"),
        (recognizers.labelled_field, "id;name;plan\n17;Sade Okafor;pro", "Sade Okafor"),
        (recognizers.document_number, "Driver's license no. K12-345-678 (Ohio)", "K12-345-678"),
        (recognizers.iban_grouped, "IBAN NL91 ABNA 0417 1643 00 next week", "NL91 ABNA 0417 1643 00"),
        (recognizers.salutation_name, "Mit freundlichen Grüßen\nJonas Weber", "Jonas Weber"),
        (recognizers.salutation_name, "hey, my name is chidi okeke", "chidi okeke"),
    ],
)  # fmt: skip
def test_recognizers_find_what_presidio_misses(factory: Any, text: str, found: str) -> None:
    recognizer = factory()
    results = recognizer.analyze(text, recognizer.supported_entities, None)
    assert found in {text[r.start : r.end] for r in results}


@pytest.mark.parametrize(
    ("factory", "text"),
    [
        (recognizers.street_address, "Upgrade to Windows Server 2019 build 20231104.7 first."),
        (recognizers.document_number, "The license costs 1200 per seat, valid 2024-2025."),
        (recognizers.iban_grouped, "Ticket DE12 3456 7890 1234 5678 90 is not a checksummed IBAN."),
        (recognizers.labelled_field, "Name of the report: quarterly.pdf"),
        (recognizers.salutation_name, "Hi there, my name is not important."),
    ],
)  # fmt: skip
def test_recognizers_leave_look_alikes(factory: Any, text: str) -> None:
    recognizer = factory()
    assert recognizer.analyze(text, recognizer.supported_entities, None) == []


def test_card_recognizer_checks_luhn() -> None:
    recognizer = recognizers.card_2series()
    results = recognizer.analyze("Order 2221 0000 0000 0001 shipped.", ["CREDIT_CARD"], None)
    assert not [r for r in results if r.score > 0]
