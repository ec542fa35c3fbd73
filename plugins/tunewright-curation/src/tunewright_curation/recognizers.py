"""PII recognizers presidio does not ship (factories: presidio is imported when called)."""

from __future__ import annotations

from typing import Any

_STREET_TYPES = (
    r"Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Drive|Dr\.?|Lane|Ln\.?|Boulevard|Blvd\.?|Way|"
    r"Court|Ct\.?|Place|Pl\.?|Terrace|Parkway|Pkwy\.?|Highway|Hwy\.?|Square|Sq\.?"
)
STREET_ADDRESS_REGEX = (
    r"\b\d{1,6}\s+(?:[A-Z][a-z]+\s+){1,3}(?:" + _STREET_TYPES + r")"
    # optional ", City" / ", City, ST" / " 12345"
    r"(?:,?\s+(?:Apt|Suite|Unit)\.?\s*\w+)?"
    r"(?:,\s*[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)?(?:,\s*[A-Z]{2})?(?:\s+\d{5}(?:-\d{4})?)?"
)
ACCOUNT_ID_REGEX = r"\b(?:ACCT|ACC|CUST|CUS|ACCOUNT)[-_ ]?\d{5,10}\b"
CARD_2SERIES_REGEX = (
    r"\b2(?:2(?:2[1-9]|[3-9]\d)|[3-6]\d\d|7(?:[01]\d|20))[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b"
)


def street_address() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(
        supported_entity="STREET_ADDRESS",
        name="StreetAddressRecognizer",
        patterns=[Pattern("street_address", STREET_ADDRESS_REGEX, 0.6)],
        context=["address", "office", "located", "ship", "street", "live"],
    )


def account_id() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(
        supported_entity="ACCOUNT_ID",
        name="AccountIdRecognizer",
        patterns=[Pattern("account_id", ACCOUNT_ID_REGEX, 0.6)],
        context=["account", "customer", "id", "number"],
    )


def card_2series() -> Any:
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    # CreditCardRecognizer validates the Luhn checksum of what the pattern matches
    return CreditCardRecognizer(
        patterns=[Pattern("mastercard_2series", CARD_2SERIES_REGEX, 0.5)],
        name="Mastercard2SeriesRecognizer",
    )


# names in the places a support conversation puts them; spaCy's small model misses many of
# these ("Hi Lukas, thanks ..."): the name is the group, the cue word is not scrubbed
SALUTATION_NAME_REGEXES = (
    r"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank you),?[ \t]+(?P<name>[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)?)",
    r"\b(?:this is|my name is|[Ii] am|I'm|[Nn]ame:)[ \t]+(?P<name>[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)?)",
    r"\b(?:[Rr]egards|Cheers|Sincerely|Best|Thanks),?\s+(?P<name>[A-Z][a-z]+[ \t]+[A-Z][a-z]+)",
)


def salutation_name() -> Any:
    import re

    from presidio_analyzer import EntityRecognizer, RecognizerResult

    patterns = [re.compile(p) for p in SALUTATION_NAME_REGEXES]

    class SalutationNameRecognizer(EntityRecognizer):  # type: ignore[misc]
        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            found: dict[tuple[int, int], None] = {}
            for pattern in patterns:
                for m in pattern.finditer(text):
                    found[(m.start("name"), m.end("name"))] = None
            return [RecognizerResult("PERSON", a, b, 0.5) for a, b in found]

    return SalutationNameRecognizer(
        supported_entities=["PERSON"], name="SalutationNameRecognizer", supported_language="en"
    )
