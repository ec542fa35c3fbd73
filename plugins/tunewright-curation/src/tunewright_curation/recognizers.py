"""PII recognizers presidio does not ship (factories: presidio is imported when called)."""

from __future__ import annotations

from typing import Any

# Street grammar from postal standards, not from any data set: USPS Publication 28 (appendix C1
# street suffixes and C2 unit designators), Royal Mail and Canada Post thoroughfare types, and
# the thoroughfare words of the main European and Latin American address formats.
_USPS_SUFFIXES = (
    "Alley|Aly|Annex|Arcade|Avenue|Ave|Av|Bayou|Beach|Bend|Bluffs?|Bottom|Boulevard|Blvd|Branch|"
    "Bridge|Brook|Burgs?|Bypass|Camp|Canyon|Cape|Causeway|Center|Centre|Circles?|Cir|Cliffs?|Club|"
    "Common|Corners?|Course|Courts?|Ct|Coves?|Creek|Crescent|Cres|Crest|Crossing|Crossroad|Curve|"
    "Dale|Dam|Divide|Drives?|Dr|Estates?|Expressway|Expy|Extensions?|Falls?|Ferry|Fields?|Flats?|"
    "Fords?|Forest|Forges?|Forks?|Fort|Freeway|Fwy|Gardens?|Gdns|Gateway|Glens?|Greens?|Groves?|"
    "Harbors?|Haven|Heights|Hts|Highway|Hwy|Hills?|Hollow|Inlet|Islands?|Isle|Junctions?|Keys?|"
    "Knolls?|Lakes?|Land|Landing|Lane|Ln|Light|Lights|Loaf|Locks?|Lodge|Loop|Mall|Manors?|Meadows?|"
    "Mews|Mills?|Mission|Motorway|Mount|Mountains?|Neck|Orchard|Oval|Overpass|Parks?|Parkways?|"
    "Pkwy|Pass|Passage|Path|Pike|Pines?|Place|Pl|Plains?|Plaza|Plz|Points?|Ports?|Prairie|Radial|"
    "Ramp|Ranch|Rapids?|Rest|Ridges?|River|Road|Rd|Roads|Route|Rte|Row|Rue|Run|Shoals?|Shores?|"
    "Skyway|Springs?|Spurs?|Squares?|Sq|Station|Stravenue|Stream|Streets?|St|Summit|Terrace|Ter|"
    "Throughway|Trace|Track|Trafficway|Trail|Trl|Tunnel|Turnpike|Underpass|Union|Valleys?|Via|"
    "Viaduct|Views?|Villages?|Ville|Vista|Walks?|Wall|Way|Ways|Wells?|Close|Grove|Gardens|Rise|"
    "Vale|Wynd|Quay|Parade|Esplanade|Broadway|Drive"
)
_UNIT = r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|Building|#)\.?\s*#?[\w-]{1,6})"
# one word of a street or place name: capitalised, any script's letters, inner ' - .
_NAME_WORD = r"[A-ZÀ-ÖØ-ÞĀ-ſ][\w'’.-]*"
# "6750 Koskikatu Drive", "12B North Elm St." (house number first: US, UK, CA, AU, IE)
_NUMBER_FIRST = (
    rf"\b\d{{1,6}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+(?:{_NAME_WORD}\s+){{0,4}}"
    rf"(?:{_USPS_SUFFIXES})\b\.?{_UNIT}?"
)
# words ending in a thoroughfare suffix, then the number: Hauptstraße 5, Mannerheimintie 12 A,
# Keizersgracht 123, Storgatan 1, Nørrebrogade 20, Karl Johans gate 3
_SUFFIXES = (
    "straße|strasse|str\\.|weg|gasse|allee|platz|ring|damm|ufer|chaussee|steig|pfad|markt|"
    "straat|laan|gracht|plein|kade|singel|dijk|steeg|"
    "katu|tie|kuja|polku|raitti|väylä|kaari|rinne|"
    "gatan|vägen|gränd|torget|stigen|gade|vej|vei|veien|gata|gate"
)
_SUFFIX_FIRST = (
    rf"\b(?:{_NAME_WORD}\s+){{0,3}}[\wÀ-ſ'’-]*(?:{_SUFFIXES})\s+\d{{1,5}}\s?[A-Za-z]?"
    rf"(?:\s*[-/]\s*\d{{1,4}})?(?:\s+[A-Z]\s?\d{{1,3}})?{_UNIT}?"
)
# a thoroughfare word first: Via Roma 12, Calle de Alcalá, 45, Rua das Flores, 123,
# ul. Długa 5, Atatürk Caddesi No: 12, Avenida Paulista 1000
_PREFIXES = (
    "Via|Viale|Piazza|Piazzale|Corso|Largo|Vicolo|Strada|Calle|C/|Avenida|Avda\\.?|Av\\.|Paseo|"
    "Plaza|Camino|Carrera|Carretera|Travesía|Ronda|Rambla|Carrer|Rua|R\\.|Travessa|Praça|Alameda|"
    "Estrada|Rodovia|ul\\.|ulica|al\\.|aleja|plac|os\\.|Am|An der|Auf der|Im"
)
_PREFIX_FIRST = (
    rf"\b(?:{_PREFIXES})\s+(?:(?:de|del|de la|dos|das|do|da|di|della|dei)\s+)?"
    rf"(?:{_NAME_WORD}\s*){{1,4}},?\s*(?:n[º°o]\.?\s*)?\d{{1,5}}[A-Za-z]?"
    rf"(?:\s*[,-]?\s*\d{{1,2}}\s?[ºª°]\s?[A-Za-z]?)?"
)
_TURKISH = rf"\b(?:{_NAME_WORD}\s+){{1,3}}(?:Caddesi|Cad\.|Cd\.|Sokak|Sokağı|Sk\.|Bulvarı|Mahallesi|Mah\.)\s*(?:No\s*:?\s*)?\d{{1,5}}"
# number first with a French thoroughfare word: 12 rue de la Paix, 5 bis avenue Foch
_FRENCH = (
    r"\b\d{1,5}(?:\s?(?:bis|ter|[A-Za-z]))?,?\s+(?:rue|avenue|av\.|boulevard|bd|chemin|allée|"
    r"place|impasse|quai|route|cours|passage|square|chaussée)\s+[^\n,.;:]{2,50}?"
    r"(?=\s*[\n,.;:]|\s+\d{4,5}\b|$)"
)
STREET_REGEXES = (_NUMBER_FIRST, _SUFFIX_FIRST, _PREFIX_FIRST, _TURKISH, _FRENCH)
# kept for the old name: the US/UK/CA form
STREET_ADDRESS_REGEX = _NUMBER_FIRST

# Postal codes (Universal Postal Union formats); the ambiguous all-digit ones only next to a
# street line, a place name or a context word
POSTCODE_UK = r"\b(?:GIR ?0AA|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})\b"
POSTCODE_CA = r"\b[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d\b"
POSTCODE_NL = r"\b[1-9]\d{3} ?[A-Z]{2}\b"
POSTCODE_DIGITS = (
    r"\b(?:\d{5}(?:-\d{4})?|\d{5}-\d{3}|\d{3}-\d{4}|\d{2}-\d{3}|\d{4}|\d{3} \d{2}|\d{6})\b"
)
# continuation of a street line: ", City, ST 12345", "\n00100 Helsinki", "\nSpringfield, IL",
# "\nUnited Kingdom": up to four parts, each a place name and/or a postal code
_PLACE = rf"{_NAME_WORD}(?:[ \t]+(?:{_NAME_WORD}|de|do|da|del|am|an|der|sur|upon|on))*"
_POSTAL = rf"(?:{POSTCODE_UK}|{POSTCODE_CA}|{POSTCODE_NL}|{POSTCODE_DIGITS})"
_CONTINUATION = (
    rf"(?:[ \t]*[,\n][ \t]*\n?[ \t]*(?:(?:{_POSTAL})[ \t]+{_PLACE}|{_PLACE}(?:,?[ \t]+{_POSTAL})?"
    rf"|{_POSTAL}|[A-Z]{{2}}[ \t]+\d{{5}}(?:-\d{{4}})?)){{0,4}}"
)


ACCOUNT_ID_REGEX = r"\b(?:ACCT|ACC|CUST|CUS|ACCOUNT)[-_ ]?\d{5,10}\b"
CARD_2SERIES_REGEX = (
    r"\b2(?:2(?:2[1-9]|[3-9]\d)|[3-6]\d\d|7(?:[01]\d|20))[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b"
)


def street_address() -> Any:
    import re

    from presidio_analyzer import EntityRecognizer, RecognizerResult

    streets = [re.compile(p) for p in STREET_REGEXES]
    tail = re.compile(_CONTINUATION)

    class StreetAddressRecognizer(EntityRecognizer):  # type: ignore[misc]
        """A street line in any of the common national formats, extended over the postal
        block that follows it (city, region, postal code, country; across line breaks)."""

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            found: list[tuple[int, int]] = []
            for pattern in streets:
                for m in pattern.finditer(text):
                    end = m.end()
                    more = tail.match(text, end)
                    if more:
                        end = more.end()
                    found.append((m.start(), end))
            return [RecognizerResult("STREET_ADDRESS", a, b, 0.6) for a, b in _union(found)]

    return StreetAddressRecognizer(
        supported_entities=["STREET_ADDRESS"], name="StreetAddressRecognizer",
        supported_language="en",
    )  # fmt: skip


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def postal_code() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    # distinctive shapes score on their own; bare digit groups need a context word
    return PatternRecognizer(
        supported_entity="ZIP_CODE",
        name="PostalCodeRecognizer",
        patterns=[
            Pattern("uk_postcode", POSTCODE_UK, 0.5),
            Pattern("ca_postcode", POSTCODE_CA, 0.5),
            Pattern("nl_postcode", POSTCODE_NL, 0.2),
            Pattern("digits_postcode", POSTCODE_DIGITS, 0.05),
        ],
        context=[
            "zip",
            "zipcode",
            "postcode",
            "postal",
            "post",
            "plz",
            "cep",
            "code",
            "postleitzahl",
            "cap",
            "mailing",
            "address",
        ],
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
_CAP_NAME = r"[A-ZÀ-ÖØ-ÞĀ-ſ][\w'’-]+"
_ANY_NAME = r"[^\W\d_][\w'’-]+"
_PARTICLE = r"(?:van der|van den|van|von|de la|de|del|da|di|du|dos|bin|binti|ibn|al|el|le|la|ter)"
# a person's name: 1-3 parts, particles between them ("Ana de la Cruz", "Jan van der Berg")
_CAP_FULL = rf"{_CAP_NAME}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_CAP_NAME}){{0,2}}"
_ANY_FULL = rf"{_ANY_NAME}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_ANY_NAME}){{0,2}}"
# names in the places a conversation puts them; spaCy's small model misses many of these
# ("Hi Lukas, thanks ..."): the name is the group, the cue word is not scrubbed
SALUTATION_NAME_REGEXES = (
    rf"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank you|Hallo|Hola|Bonjour|Ciao|Hej|Moi),?[ \t]+(?P<name>{_CAP_FULL})",
    rf"\b(?:this is|my name is|[Ii] am|I'm|[Nn]ame:|[Cc]ontact:|[Ff]rom:|[Tt]o:|[Aa]ttn:?|c/o)[ \t]+(?P<name>{_CAP_FULL})",
    rf"\b(?:[Rr]egards|Cheers|Sincerely|Best|Thanks|Yours),?\s+(?P<name>{_CAP_NAME}[ \t]+{_CAP_FULL})",
    # courtesy titles are the strongest cue there is
    rf"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sr|Sra|Srta|Mme|Mlle|M|Herr|Frau|Hr|Fr|Sig|Sig\.ra)\.?[ \t]+(?P<name>{_CAP_FULL})",
    # after a cue that only introduces a name, lower-case names count too ("my name is ana")
    rf"\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|[Cc]all me|[Nn]amed|[Ss]igned)[ \t]+(?P<name>{_ANY_FULL})",
)
_NOT_A_NAME = frozenset({"a", "an", "the", "here", "there", "sorry", "not", "so", "very", "happy",
    "glad", "writing", "just", "also", "still", "back", "again", "now", "please", "and", "or",
    "but", "your", "our", "my", "their", "his", "her", "to", "in", "on", "at", "for", "with",
    "from", "by", "is", "was", "it", "team", "support", "customer", "all", "everyone", "mr", "mrs",
    "ms", "mx", "dr", "prof", "sir", "madam"})  # fmt: skip


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
                    words = m.group("name").split()
                    # trim words that are not names ("Hi Anna and" -> "Anna")
                    while words and words[-1].lower() in _NOT_A_NAME:
                        words.pop()
                    if not words or words[0].lower() in _NOT_A_NAME:
                        continue
                    start = m.start("name")
                    end = start + len(" ".join(words)) if len(words) == 1 else None
                    if end is None:  # keep the original spacing between the kept words
                        end = start
                        for word in words:
                            end = text.index(word, end) + len(word)
                    found[(start, end)] = None
            return [RecognizerResult("PERSON", a, b, 0.5) for a, b in found]

    return SalutationNameRecognizer(
        supported_entities=["PERSON"], name="SalutationNameRecognizer", supported_language="en"
    )
