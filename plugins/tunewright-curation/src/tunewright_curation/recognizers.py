"""PII recognizers presidio does not ship (factories: presidio is imported when called)."""

from __future__ import annotations

import re
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
# unit designators: USPS C2, and the flat/apartment words of other countries (lgh, as., apto…)
_UNIT_WORDS = (
    r"Apartment|Apto|Appt|Apt|App|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|Building|Bldg|lgh|as|"
    r"dpto|depto|piso|puerta|pta|esc|bloco|bl|sala|loja|int|interno|scala|bte|Wohnung|whg|"
    r"mieszkanie|m(?=\.)|#"
)
# the unit's own id: a number ("864", "3B", "12-1") or one letter
_UNIT = rf"(?:\s*[,-]?\s*(?i:{_UNIT_WORDS})\.?\s*#?(?:\d[\w/-]{{0,5}}|[A-Za-z]\d{{0,4}}\b))"
_UNITS = rf"{_UNIT}{{0,3}}"
# a unit written before the street ("Flat 3, 14th Cross Road")
_LEADING_UNIT = r"(?:(?:Flat|Apt|Unit|Suite|Apartment)\.?\s*\w{1,6},?\s+)?"
# one word of a street or place name: capitalised, any script's letters, inner ' - .
_NAME_WORD = r"[A-ZÀ-ÖØ-ÞĀ-ſ][\w'’.-]*"
# a word of a street name, any case, or an ordinal ("42nd"); bounded in count where used
_ANY_WORD = r"(?:[^\W\d_][\w'’.-]*|\d{1,3}(?:st|nd|rd|th))"
_STREET_WORD = rf"(?:{_NAME_WORD}|\d{{1,3}}(?:st|nd|rd|th)|[NSEW]\.?)"
# the suffixes that are not also everyday words ("close", "run", "park", "way" are): the only
# ones trusted in a street typed all in lower case
_LOWER_SUFFIXES = (
    "street|st|avenue|ave|road|rd|drive|dr|lane|ln|boulevard|blvd|court|ct|terrace|parkway|"
    "pkwy|highway|hwy|crescent|cres|circle|cir|trail|trl|expressway|expy|turnpike"
)
# "6750 Koskikatu Drive", "12B North Elm St." (house number first: US, UK, CA, AU, IE)
_NUMBER_FIRST = (
    rf"{_LEADING_UNIT}\b\d{{1,6}}(?:st|nd|rd|th|[A-Za-z])?(?:[-/]\d{{1,4}})?,?\s+"
    # capitalised as printed, or a whole street typed in lower case ("666 lincoln lane")
    rf"(?:(?:{_STREET_WORD}\s+){{0,4}}(?:{_USPS_SUFFIXES})"
    rf"|(?:(?:[a-z][\w'’.-]*|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,4}}(?:{_LOWER_SUFFIXES}))\b\.?{_UNITS}"
)
# words ending in a thoroughfare suffix, then the number: Hauptstraße 5, Mannerheimintie 12 A,
# Keizersgracht 123, Storgatan 1, Nørrebrogade 20, Karl Johans gate 3
_SUFFIXES = (
    "straße|strasse|str\\.|weg|gasse|allee|platz|ring|damm|ufer|chaussee|steig|pfad|markt|"
    "straat|laan|gracht|plein|kade|singel|dijk|steeg|"
    "dreef|hof|boulevard|bulevar|"
    "katu|tie|kuja|polku|raitti|väylä|kaari|rinne|bulevardi|puistikko|"
    "gatan|vägen|gränd|torget|stigen|gade|vej|vei|veien|gata|gate"
)
_SUFFIX_FIRST = (
    # capitalised words before the suffix word, or a street written all in lower case
    rf"\b(?:(?:{_NAME_WORD}\s+){{0,2}}[\w'’-]*|(?:[^\W\d_A-Z][\w'’-]*\s+){{0,2}}(?:[^\W\d_A-Z][\w'’-]*)?)"
    rf"(?i:{_SUFFIXES})\s+\d{{1,5}}(?:\s?[A-Za-z]\b)?"
    rf"(?:\s*[-/]\s*(?:\d{{1,4}}|[IVX]{{1,4}}))?(?:\s+(?:bis|ter))?(?:\s+(?:[A-Z]\s?)?\d{{1,3}}\b)?{_UNITS}"
)
# a thoroughfare word first: Via Roma 12, Calle de Alcalá, 45, Rua das Flores, 123,
# ul. Długa 5, Atatürk Caddesi No: 12, Avenida Paulista 1000
_PREFIXES = (
    "Via|Viale|Piazza|Piazzale|Corso|Largo|Vicolo|Strada|Calle|C/|Avenida|Avda\\.?|Av\\.|Paseo|"
    "Plaza|Camino|Carrera|Carretera|Travesía|Ronda|Rambla|Carrer|Rua|R\\.|Travessa|Praça|Alameda|"
    "Estrada|Rodovia|Pasaje|Passeig|Vía|ul\\.|ulica|al\\.|aleja|plac|os\\.|Am|An der|Auf der|Im"
)
_PREFIX_FIRST = (
    rf"\b(?i:{_PREFIXES})\s+(?:{_ANY_WORD}\s*){{1,5}},?\s*(?:n[º°o]\.?\s*)?\d{{1,5}}[A-Za-z]?"
    rf"(?:\s*[,-]?\s*\d{{1,2}}\s?[ºª°]\s?[A-Za-z]?)?{_UNITS}"
)
_TURKISH = (
    rf"\b(?:{_NAME_WORD}\s+){{1,3}}(?:Caddesi|Cad\.|Cd\.|Sokak|Sokağı|Sok\.|Sk\.|Bulvarı|Mahallesi|Mah\.)"
    rf"(?:\s+(?:{_NAME_WORD}\s+){{1,3}}(?:Caddesi|Cad\.|Cd\.|Sokak|Sokağı|Sok\.|Sk\.|Bulvarı))?"
    rf"\s*(?:No\s*:?\s*)?\d{{1,5}}(?:\s*/\s*\d{{1,4}})?(?:\s*D\s*:?\s*\d{{1,4}})?"
)
# number first with a French thoroughfare word: 12 rue de la Paix, 5 bis avenue Foch
_FRENCH = (
    r"\b\d{1,5}(?:\s?(?:bis|ter|[A-Za-z]))?,?\s+(?:rue|avenue|av\.|boulevard|bd|chemin|allée|"
    r"place|impasse|quai|route|cours|passage|square|chaussée)\s+[^\n,.;:]{2,50}?"
    r"(?=\s*[\n,.;:]|\s+\d{4,5}\b|$)"
)
STREET_REGEXES = (_NUMBER_FIRST, _SUFFIX_FIRST, _PREFIX_FIRST, _TURKISH, _FRENCH)

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
    # a "Label:" line (City:, ZIP:) is the form's next field, not part of this address
    rf"(?:[ \t]*[,\n][ \t]*\n?[ \t]*(?!{_NAME_WORD}(?:[ \t]+\w+)?[ \t]*:)(?:(?:{_POSTAL})[ \t]+{_PLACE}|{_PLACE}(?:,?[ \t]+{_POSTAL})?"
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
    # a sign-off, then the name on a line of its own (English and the address formats' languages)
    rf"(?i:regards|best regards|kind regards|warm regards|many thanks|thanks|thank you|cheers|best|"
    rf"sincerely|yours|yours truly|br|viele grüße|mit freundlichen grüßen|liebe grüße|grüße|"
    rf"med vänliga hälsningar|vänliga hälsningar|hälsningar|mvh|terveisin|ystävällisin terveisin|"
    rf"cordialement|bien à vous|saludos|un saludo|atentamente|cumprimentos|atenciosamente|abraços|"
    rf"distinti saluti|cordiali saluti|saluti|groeten|met vriendelijke groet|pozdrawiam|"
    rf"saludos cordiales|un cordial saludo|un abrazo|amitiés|"
    rf"z poważaniem|saygılarımla|iyi günler)[,!.]?[ \t]*\n[ \t]*(?P<name>{_CAP_FULL})[ \t]*(?=\n|$)",
    # a dash signature at the end of a line: "… for a week. — Ana de la Cruz"
    rf"(?:^|\s)[\u2014\u2013][ \t]*(?P<name>{_CAP_FULL})[ \t]*(?=\n|$)",  # em or en dash
    # a greeting, a lower-case name, then "," or "!" ("oh hi eva-maria!")
    r"\b(?:[Hh]i|[Hh]ello|[Hh]ey|[Dd]ear)[ \t]+(?P<name>[^\W\d_][\w'’-]+)(?=[ \t]*[,!])",
    # after a cue that only introduces a name, lower-case names count too ("my name is ana")
    rf"\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|[Cc]all me|[Nn]amed|[Ss]igned)[ \t]+(?P<name>{_ANY_FULL})",
)
_NOT_A_NAME = frozenset({"a", "an", "the", "here", "there", "sorry", "not", "so", "very", "happy",
    "glad", "writing", "just", "also", "still", "back", "again", "now", "please", "and", "or",
    "but", "your", "our", "my", "their", "his", "her", "to", "in", "on", "at", "for", "with",
    "from", "by", "is", "was", "it", "team", "support", "customer", "all", "everyone", "mr", "mrs",
    "ms", "mx", "dr", "prof", "sir", "madam", "guys", "folks", "yall", "both",
    "you", "friend", "friends", "hi", "hello", "hey", "dear", "thanks"})  # fmt: skip


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
                    start = end = m.start("name")
                    for word in words:  # the kept words, with the text's own spacing
                        end = text.index(word, end) + len(word)
                    found[(start, end)] = None
            return [RecognizerResult("PERSON", a, b, 0.5) for a, b in found]

    return SalutationNameRecognizer(
        supported_entities=["PERSON"], name="SalutationNameRecognizer", supported_language="en"
    )


# an IBAN as banks print it: upper-case country code, check digits, groups of four
_IBAN_CANDIDATE = r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?"


def _iban_valid(candidate: str) -> bool:
    """ISO 13616 check: length 15-34 and the mod-97 remainder of the rearranged number is 1."""
    compact = candidate.replace(" ", "").replace("-", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def iban_grouped() -> Any:
    import re

    from presidio_analyzer import EntityRecognizer, RecognizerResult

    candidate = re.compile(_IBAN_CANDIDATE)
    group = re.compile(r"[ -]?[A-Z0-9]{1,4}$")

    class IbanGroupedRecognizer(EntityRecognizer):  # type: ignore[misc]
        """presidio's IBAN pattern is case-insensitive, so a word after the number ("... 1252
        last week") joins the match and the whole fails the checksum; this one matches the
        printed shape and drops trailing groups until the checksum holds."""

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            out = []
            for m in candidate.finditer(text):
                value = m.group()
                while value and not _iban_valid(value):
                    trimmed = group.sub("", value)
                    if trimmed == value:
                        break
                    value = trimmed
                if value and _iban_valid(value):
                    out.append(
                        RecognizerResult("IBAN_CODE", m.start(), m.start() + len(value), 1.0)
                    )
            return out

    return IbanGroupedRecognizer(
        supported_entities=["IBAN_CODE"], name="IbanGroupedRecognizer", supported_language="en"
    )


# Field labels of forms, logs, JSON and CSV headers, in the languages of the address formats
# above: what follows a label is the value, whatever its shape.
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "PERSON": (
        "name",
        "full name",
        "full_name",
        "fullname",
        "customer name",
        "customer_name",
        "client name",
        "contact name",
        "contact",
        "recipient",
        "consignee",
        "sender",
        "cardholder",
        "card holder",
        "account holder",
        "passenger",
        "patient",
        "requester",
        "requester_name",
        "surname",
        "last name",
        "last_name",
        "lastname",
        "family name",
        "first name",
        "first_name",
        "firstname",
        "given name",
        "given_name",
        "nome",
        "nombre",
        "nom",
        "prénom",
        "naam",
        "voornaam",
        "achternaam",
        "vorname",
        "nachname",
        "imię",
        "nazwisko",
        "ad",
        "soyad",
        "ad soyad",
        "nimi",
        "sukunimi",
        "etunimi",
        "namn",
        "efternamn",
        "förnamn",
        "cognome",
        "apellido",
        "apellidos",
        "sobrenome",
        "attn",
    ),
    "STREET_ADDRESS": (
        "address",
        "street",
        "street address",
        "street_address",
        "addr",
        "address line 1",
        "address1",
        "address_1",
        "mailing address",
        "shipping address",
        "billing address",
        "delivery address",
        "home address",
        "adres",
        "adresse",
        "anschrift",
        "straße",
        "strasse",
        "dirección",
        "direccion",
        "endereço",
        "endereco",
        "indirizzo",
        "via",
        "adresim",
        "adres satırı",
        "osoite",
        "katuosoite",
        "gatuadress",
        "ulica",
    ),
    "ZIP_CODE": (
        "zip",
        "zip code",
        "zipcode",
        "zip_code",
        "postcode",
        "post code",
        "postal code",
        "postal_code",
        "postalcode",
        "plz",
        "postleitzahl",
        "cep",
        "cap",
        "código postal",
        "codigo postal",
        "code postal",
        "postnummer",
        "postinumero",
        "kod pocztowy",
        "posta kodu",
    ),
    "LOCATION": (
        "city",
        "town",
        "state",
        "province",
        "county",
        "country",
        "region",
        "ort",
        "stadt",
        "wohnort",
        "ville",
        "pays",
        "ciudad",
        "país",
        "pais",
        "provincia",
        "cidade",
        "estado",
        "città",
        "citta",
        "paese",
        "woonplaats",
        "plaats",
        "land",
        "kaupunki",
        "postitoimipaikka",
        "stad",
        "ort",
        "miasto",
        "kraj",
        "şehir",
        "il",
        "ilçe",
    ),
}
_LABEL_TO_ENTITY = {label: e for e, labels in FIELD_LABELS.items() for label in labels}
_LABEL = "|".join(sorted((re.escape(k) for k in _LABEL_TO_ENTITY), key=len, reverse=True))
# Label: value (to the end of the line) | "label": "value" | label=value / label="value"
_FIELD_PATTERNS = (
    rf"(?im)^[ \t]*(?P<label>{_LABEL})[ \t]*:[ \t]*(?P<value>[^\n:]{{1,80}}?)[ \t]*$",
    rf"(?i)[\"'](?P<label>{_LABEL})[\"'][ \t]*:[ \t]*[\"'](?P<value>[^\"'\n]{{1,80}})[\"']",
    rf"(?i)(?<![\w.])(?P<label>{_LABEL})=(?:\"(?P<quoted>[^\"\n]{{1,80}})\"|(?P<bare>[^\n=&\"]{{1,60}}?)(?=[ \t]+\w+=|[ \t]*[,;&]|[ \t]*$))",
)
_DELIMITERS = (",", "\t", ";", "|")


def _header_columns(line: str) -> tuple[str, dict[int, str]] | None:
    """A CSV/TSV header line's delimiter and {column: entity} for the PII columns it names."""
    for delimiter in _DELIMITERS:
        cells = [c.strip().strip("\"'").lower() for c in line.split(delimiter)]
        if len(cells) >= 2 and all(c and len(c) <= 30 for c in cells):
            columns = {i: _LABEL_TO_ENTITY[c] for i, c in enumerate(cells) if c in _LABEL_TO_ENTITY}
            if columns and all(re.fullmatch(r"[^\W\d][\w .-]*", c) for c in cells):
                return delimiter, columns
    return None


def labelled_field() -> Any:
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    patterns = [re.compile(p) for p in _FIELD_PATTERNS]

    class LabelledFieldRecognizer(EntityRecognizer):  # type: ignore[misc]
        """Values of fields whose label names personal data: ``Name: …``, ``"zip": "…"``,
        ``name="…"`` and the columns of a CSV/TSV header (``date,name,card``)."""

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            out: list[Any] = []

            def add(label: str, start: int, end: int) -> None:
                entity = _LABEL_TO_ENTITY[label.lower()]
                value = text[start:end]
                if entity in entities and re.search(r"[^\W_]", value):
                    out.append(RecognizerResult(entity, start, start + len(value.rstrip()), 0.6))

            for pattern in patterns:
                for m in pattern.finditer(text):
                    group = next(
                        g
                        for g in ("value", "quoted", "bare")
                        if g in pattern.groupindex and m.group(g)
                    )
                    add(m.group("label"), m.start(group), m.end(group))
            self._table(text, add)
            return out

        @staticmethod
        def _table(text: str, add: Any) -> None:
            lines = text.split("\n")
            offset = 0
            header: tuple[str, dict[int, str], list[str]] | None = None
            for line in lines:
                found = _header_columns(line)
                if found:
                    delimiter, columns = found
                    names = [c.strip().strip("\"'") for c in line.split(delimiter)]
                    header = (delimiter, columns, names)
                elif header and line.count(header[0]) == len(header[2]) - 1:
                    delimiter, columns, names = header
                    start = offset
                    for i, cell in enumerate(line.split(delimiter)):
                        if i in columns and cell.strip():
                            lead = len(cell) - len(cell.lstrip(" \"'"))
                            value = cell.strip().strip("\"'")
                            add(names[i], start + lead, start + lead + len(value))
                        start += len(cell) + 1
                else:
                    header = None
                offset += len(line) + 1

    return LabelledFieldRecognizer(
        supported_entities=list(FIELD_LABELS),
        name="LabelledFieldRecognizer",
        supported_language="en",
    )


# an identity document's number shortly after its name: "license is from Virginia, number
# U60-28-9166", "passport no. B88128397" (presidio's patterns miss dashed and mixed forms)
_DOCUMENT_KEYWORDS = {
    "US_DRIVER_LICENSE": r"driver'?s?[ \t]+licen[cs]e|driving[ \t]+licen[cs]e|licen[cs]e|\bDL\b|\bDLN\b",
    "US_PASSPORT": r"passport|passeport|pasaporte|passaporto|reisepass|paspoort|passaporte",
}
_DOCUMENT_NUMBER = r"(?<![\w-])(?!\d{4}[-/]\d{2,4}(?![\w-]))(?=[A-Z0-9-]*\d[A-Z0-9-]*\d[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,18}[A-Z0-9](?![\w-])"


def document_number() -> Any:
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    patterns = {
        entity: re.compile(
            rf"(?i:{keywords})(?:[^.!?\n]|(?<=\b[Nn][or])\.){{0,40}}?(?P<number>{_DOCUMENT_NUMBER})"
        )
        for entity, keywords in _DOCUMENT_KEYWORDS.items()
    }

    class DocumentNumberRecognizer(EntityRecognizer):  # type: ignore[misc]
        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            return [
                RecognizerResult(entity, m.start("number"), m.end("number"), 0.6)
                for entity, pattern in patterns.items()
                if entity in entities
                for m in pattern.finditer(text)
            ]

    return DocumentNumberRecognizer(
        supported_entities=list(_DOCUMENT_KEYWORDS),
        name="DocumentNumberRecognizer",
        supported_language="en",
    )
