"""PII canaries: plant synthetic personal data in shadow copies of a dataset's rows, scrub them
with the job's own engine and policy, and measure per entity type how much the scrubber caught.

The ground-truth recall on the example tickets (tests) says how good the scrubber is on data we
generated; canaries say it for *this* job: its model, its recognizers (plugins included), its
score threshold and allow-list, on the style of text its rows are written in. A recognizer that
went missing (a plugin not installed, a model swapped) shows up as a type whose recall drops.

Per entity type the job scans and this module can fake (:data:`GENERATORS`), ``per_type``
values are generated from a seeded :class:`random.Random` (never the Faker package: evaluation
sets elsewhere come from Faker, canaries must not share their values). Each one goes into a
shadow copy of a sampled carrier text (accepted rows' texts, already scrubbed): either as a
short sentence of its own at a sentence boundary, or as a clause in the middle of an existing
sentence, with one of several neutral phrasings. The carrier is cut to the sentences around
the insertion (the scrubber analyses each sentence on its own, so the rest cannot matter).

A fresh :class:`~tunewright.ingest.pii.DatasetScrubber` finds spans in the shadow texts, so the
real dataset's audit, pseudonym map and counts are untouched. A canary is caught when at least
:data:`CATCH_SHARE` of its characters lie inside detected spans of any entity type. Shadow texts
and values live only in this module's locals: the report holds counts, never values.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tunewright.core.errors import FailedPrecondition
from tunewright.ingest.pii import DatasetScrubber, PiiConfig, PiiEngine, segments

#: canaries planted per entity type
DEFAULT_PER_TYPE: Final = 20
#: share of a canary's characters that must lie inside detected spans for it to count as caught
CATCH_SHARE: Final = 0.9
#: carrier rows sampled from the accepted rows
CARRIER_ROWS: Final = 64
GATE_REASON: Final = "CANARY_RECALL_BELOW_MIN"

# --- value generators (no Faker: see the module docstring) ---
FIRST_NAMES: Final = (
    "Amara", "Chidi", "Ngozi", "Kwame", "Abena", "Thandiwe", "Sipho", "Tesfaye", "Aiko",
    "Hiroshi", "Xiu", "Wei", "Jun", "Minji", "Kavya", "Arjun", "Ananya", "Rohan", "Mariam",
    "Tariq", "Layla", "Yusuf", "Karim", "Soraya", "Renata", "Thiago", "Valentina", "Joaquin",
    "Camila", "Ingrid", "Lars", "Freya", "Niklas", "Oksana", "Dmitri", "Katarzyna", "Tomasz",
    "Aroha", "Tane", "Leilani", "Siobhan", "Declan", "Marisol", "Emeka", "Zainab", "Anh",
    "Linh", "Bogdan", "Ayesha", "Imran", "Giulia", "Lorenzo", "Elif", "Mehmet", "Hana",
)  # fmt: skip
LAST_NAMES: Final = (
    "Eze", "Adeyemi", "Mensah", "Boateng", "Dlamini", "Mokoena", "Abebe", "Kobayashi",
    "Nakamura", "Huang", "Zhang", "Nguyen", "Tran", "Park", "Choi", "Patel", "Banerjee", "Iyer",
    "Reddy", "Siddiqui", "Mansour", "Rahman", "Hernandez", "Castillo", "Morales", "Ramirez",
    "Johansson", "Lindqvist", "Dvorak", "Kowalski", "Petrov", "Ivanova", "Ngata", "Kahale",
    "Murphy", "Gallagher", "Esposito", "Bianchi", "Schneider", "Lefebvre", "Yilmaz", "Demir",
    "Oyelaran", "Chukwu", "Farouk", "Mahlangu", "Lindgren", "Horvath", "Sato", "Qureshi",
)  # fmt: skip
_EMAIL_DOMAINS: Final = ("quillmail.com", "northwind-corp.net", "lumenpost.org", "kiwimail.co.nz",
                         "brightinbox.io", "examplemail.com", "postfach.de", "correo-rapido.es",
                         "fjordmail.no", "harbourline.co.uk")  # fmt: skip
CITIES: Final = (
    "Lagos", "Nairobi", "Accra", "Osaka", "Hanoi", "Jakarta", "Chennai", "Karachi", "Istanbul",
    "Cairo", "Casablanca", "Lima", "Bogota", "Montevideo", "Guadalajara", "Porto", "Gdansk",
    "Tallinn", "Reykjavik", "Auckland", "Adelaide", "Winnipeg", "Halifax", "Calgary",
    "Nashville", "Manchester", "Glasgow", "Lyon", "Rotterdam", "Munich", "Seoul", "Manila",
)  # fmt: skip
_STREET_NAMES: Final = ("Maple", "Cedar", "Harbor", "Willow", "Juniper", "Orchard Hill",
                        "Lakeview", "Birchwood", "Mill", "Station", "Kingfisher", "Elm Grove",
                        "Riverside", "Chestnut", "Sunset", "Copper Ridge")  # fmt: skip
_STREET_TYPES: Final = ("Street", "Avenue", "Road", "Lane", "Drive", "Boulevard", "Way", "Court",
                        "Place", "Terrace")  # fmt: skip
_STATES: Final = ("CA", "TX", "NY", "WA", "IL", "OR", "CO", "GA", "MA", "OH")
# libphonenumber region, format with N = a random digit; checked with phonenumbers.is_valid_number
_PHONE_FORMATS: Final = (
    ("US", "(2NN) NNN-NNNN"), ("US", "2NN-NNN-NNNN"), ("US", "+1 2NN NNN NNNN"),
    ("US", "2NN.NNN.NNNN"), ("GB", "+44 20 NNNN NNNN"), ("GB", "+44 7NNN NNNNNN"),
    ("DE", "+49 30 NNNNNNNN"), ("DE", "+49 15N NNNNNNNN"), ("FR", "+33 6 NN NN NN NN"),
    ("IN", "+91 9NNNN NNNNN"), ("BR", "+55 11 9NNNN-NNNN"), ("AU", "+61 4NN NNN NNN"),
    ("CA", "(4NN) NNN-NNNN"), ("IL", "+972 5N-NNN-NNNN"),
)  # fmt: skip
# country -> BBAN layout (n digits, a capital letters), per the IBAN registry
_IBAN_LAYOUTS: Final = {"DE": "n18", "GB": "a4n14", "NL": "a4n10", "ES": "n20", "FR": "n23",
                        "IT": "a1n22", "BE": "n12", "PL": "n24", "SE": "n20", "PT": "n21",
                        "CH": "n17"}  # fmt: skip
_CARD_PREFIXES: Final = (("4", 16), ("51", 16), ("53", 16), ("55", 16), ("2221", 16),
                         ("34", 15), ("37", 15), ("6011", 16))  # fmt: skip
_LAYOUT_PART = re.compile(r"([an])(\d+)")
_LETTERS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z]", "", folded).lower()


def fake_person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def fake_email(rng: random.Random) -> str:
    first, last = _ascii(rng.choice(FIRST_NAMES)), _ascii(rng.choice(LAST_NAMES))
    local = rng.choice(
        (f"{first}.{last}", f"{first[0]}{last}{rng.randint(1, 99)}", f"{last}_{first}", first)
    )
    return f"{local}@{rng.choice(_EMAIL_DOMAINS)}"


def fake_phone(rng: random.Random) -> str:
    import phonenumbers

    for _ in range(200):
        region, layout = rng.choice(_PHONE_FORMATS)
        number = "".join(rng.choice("0123456789") if c == "N" else c for c in layout)
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(number, region)):
                return number
        except phonenumbers.NumberParseException:
            continue
    raise RuntimeError("no valid phone number generated in 200 tries")  # pragma: no cover


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def fake_credit_card(rng: random.Random) -> str:
    prefix, length = rng.choice(_CARD_PREFIXES)
    body = prefix + _digits(rng, length - len(prefix) - 1)
    number = body + luhn_check_digit(body)
    groups = (4, 6, 5) if length == 15 else (4, 4, 4, 4)
    parts, at = [], 0
    for g in groups:
        parts.append(number[at : at + g])
        at += g
    return rng.choice((" ", "-", "")).join(parts)


def iban_check_digits(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    as_number = "".join(str(int(c, 36)) for c in rearranged)
    return f"{98 - int(as_number) % 97:02d}"


def fake_iban(rng: random.Random) -> str:
    country = rng.choice(sorted(_IBAN_LAYOUTS))
    bban = "".join(
        _digits(rng, int(n)) if kind == "n" else "".join(rng.choices(_LETTERS, k=int(n)))
        for kind, n in _LAYOUT_PART.findall(_IBAN_LAYOUTS[country])
    )
    iban = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.5:
        return iban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def fake_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    sep = rng.choice(("-", "-", " "))
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


def fake_ip(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return "2001:db8:" + ":".join(f"{rng.randint(0, 0xFFFF):x}" for _ in range(6))
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def fake_location(rng: random.Random) -> str:
    return rng.choice(CITIES)


def fake_street_address(rng: random.Random) -> str:
    street = f"{rng.randint(1, 9999)} {rng.choice(_STREET_NAMES)} {rng.choice(_STREET_TYPES)}"
    tail = rng.choice(
        ("", f", {rng.choice(CITIES)}", f", {rng.choice(CITIES)}, {rng.choice(_STATES)} "
         f"{rng.randint(10000, 99999)}")
    )  # fmt: skip
    return street + tail


#: entity type -> value generator
GENERATORS: Final[Mapping[str, Callable[[random.Random], str]]] = {
    "PERSON": fake_person,
    "EMAIL_ADDRESS": fake_email,
    "PHONE_NUMBER": fake_phone,
    "CREDIT_CARD": fake_credit_card,
    "IBAN_CODE": fake_iban,
    "US_SSN": fake_ssn,
    "IP_ADDRESS": fake_ip,
    "LOCATION": fake_location,
    "STREET_ADDRESS": fake_street_address,
}

# --- carrier phrasings: {v} is the value; sentences stand alone, clauses go mid-sentence ---
SENTENCES: Final[Mapping[str, tuple[str, ...]]] = {
    "PERSON": ("{v} from our finance team asked me to follow up.",
               "This was reported by {v} yesterday.", "Please loop in {v} on the reply.",
               "I spoke with {v} on the phone about it.", "Thanks again, {v}."),
    "EMAIL_ADDRESS": ("You can reach me at {v}.", "My email is {v} if you need anything.",
                      "Please send the receipt to {v}.", "{v} is the address on the account."),
    "PHONE_NUMBER": ("Call me back on {v} please.", "My number is {v}.",
                     "The office line is {v} during the day.", "{v} is the best number to try."),
    "CREDIT_CARD": ("The card I used was {v}.", "I was charged twice on {v}.",
                    "Please refund it to card {v} instead.", "{v} is the card on file."),
    "IBAN_CODE": ("Please wire the refund to {v}.", "Our IBAN is {v}.",
                  "The transfer came from {v} last week.", "{v} is the account for payouts."),
    "US_SSN": ("My SSN is {v}.", "They asked for my social security number, {v}.",
               "The form shows {v} in the tax field.", "{v} was on the old form."),
    "IP_ADDRESS": ("The requests come from {v}.", "Our server is at {v}.",
                   "It fails when I connect from {v}.", "{v} is blocked by the firewall."),
    "LOCATION": ("I'm based in {v}.", "Our office in {v} has the same problem.",
                 "We are moving the team to {v} next month.", "The order ships from {v}."),
    "STREET_ADDRESS": ("Please ship it to {v}.", "Our new office is at {v}.",
                       "The billing address is {v}.", "{v} is where the invoices go."),
}  # fmt: skip
CLAUSES: Final[Mapping[str, tuple[str, ...]]] = {
    "PERSON": ("as {v} mentioned", "according to {v}", "and {v} agrees"),
    "EMAIL_ADDRESS": ("my email is {v}", "write to {v}", "cc {v}"),
    "PHONE_NUMBER": ("call {v}", "my number is {v}", "or phone {v}"),
    "CREDIT_CARD": ("on card {v}", "the card was {v}", "using {v}"),
    "IBAN_CODE": ("to account {v}", "our IBAN is {v}", "from {v}"),
    "US_SSN": ("my SSN is {v}", "social security number {v}", "SSN {v}"),
    "IP_ADDRESS": ("from {v}", "the server at {v}", "on host {v}"),
    "LOCATION": ("here in {v}", "at our {v} office", "near {v}"),
    "STREET_ADDRESS": ("at {v}", "shipping to {v}", "our office at {v}"),
}  # fmt: skip
_MID_SENTENCE_SHARE: Final = 0.4


@dataclass(frozen=True, slots=True)
class TypeRecall:
    planted: int
    caught: int

    @property
    def recall(self) -> float:
        return self.caught / self.planted if self.planted else 0.0


@dataclass(frozen=True)
class CanaryReport:
    """Counts per entity type (never values), the gate and the seed that reproduces the run."""

    per_type: Mapping[str, TypeRecall]
    #: scanned entity types with no generator here (not measured, not gated)
    no_generator: tuple[str, ...]
    min_recall: float
    seed: int
    catch_share: float = CATCH_SHARE

    def recall(self) -> dict[str, float]:
        return {entity: r.recall for entity, r in sorted(self.per_type.items())}

    def below_min(self) -> dict[str, float]:
        """Types whose recall is under ``min_recall`` (none when the gate is off)."""
        if self.min_recall <= 0:
            return {}
        return {e: r for e, r in self.recall().items() if r < self.min_recall}

    def gate_error(self) -> FailedPrecondition | None:
        """The job's rejection when the gate fails, naming the types and their recall."""
        below = self.below_min()
        if not below:
            return None
        shown = ", ".join(f"{e} {r:.2f}" for e, r in below.items())
        return FailedPrecondition(
            f"PII canary recall below min_canary_recall {self.min_recall:g}: {shown} "
            f"(the scrubber missed planted synthetic {'/'.join(below)} values)",
            reason=GATE_REASON,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_type": {
                e: {"planted": r.planted, "caught": r.caught, "recall": round(r.recall, 4)}
                for e, r in sorted(self.per_type.items())
            },
            "no_canary_generator": list(self.no_generator),
            "min_recall": self.min_recall,
            "passed": not self.below_min(),
            "catch_share": self.catch_share,
            "seed": self.seed,
        }


def _shadow(carrier: str, value: str, entity: str, rng: random.Random) -> tuple[str, int]:
    """A window of ``carrier`` around an insertion of ``value``; (text, offset of the value)."""
    cuts = segments(carrier)
    if not cuts:
        sentence = rng.choice(SENTENCES[entity])
        return sentence.replace("{v}", value), sentence.index("{v}")
    i = rng.randrange(len(cuts))
    start, end = cuts[max(0, i - 1)][0], cuts[min(len(cuts) - 1, i + 1)][1]
    seg_start, seg_end = cuts[i]
    words = [m.start() for m in re.finditer(r"(?<=\w) (?=\w)", carrier[seg_start:seg_end])]
    if rng.random() < _MID_SENTENCE_SHARE and len(words) >= 3:
        at = seg_start + rng.choice(words[1:-1])
        clause = ", " + rng.choice(CLAUSES[entity]) + ","
    else:  # a sentence of its own, before segment i (after the separator that precedes it)
        at = seg_start
        clause = rng.choice(SENTENCES[entity]) + " "
    inserted = clause.replace("{v}", value)
    text = carrier[start:at] + inserted + carrier[at:end]
    return text, (at - start) + clause.index("{v}")


def run_canaries(
    carriers: Sequence[str],
    engine: PiiEngine,
    config: PiiConfig,
    *,
    seed: int,
    per_type: int = DEFAULT_PER_TYPE,
    min_recall: float = 0.0,
) -> CanaryReport:
    """Plant ``per_type`` canaries of every scanned type in shadow copies of ``carriers``."""
    rng = random.Random(seed)
    planted: list[tuple[str, str, int, int]] = []  # (entity, shadow text, start, end)
    measured = [e for e in config.entities if e in GENERATORS]
    pool = [c for c in carriers if c.strip()] or [""]
    for entity in measured:
        for _ in range(per_type):
            value = GENERATORS[entity](rng)
            text, start = _shadow(rng.choice(pool), value, entity, rng)
            planted.append((entity, text, start, start + len(value)))
    found = DatasetScrubber(engine, config).find([text for _, text, _, _ in planted])
    caught: dict[str, int] = dict.fromkeys(measured, 0)
    for (entity, _text, start, end), spans in zip(planted, found, strict=True):
        covered = [False] * (end - start)
        for span in spans:
            for pos in range(max(span.start, start), min(span.end, end)):
                covered[pos - start] = True
        caught[entity] += sum(covered) >= CATCH_SHARE * (end - start)
    return CanaryReport(
        per_type={e: TypeRecall(per_type, caught[e]) for e in measured},
        no_generator=tuple(e for e in config.entities if e not in GENERATORS),
        min_recall=min_recall,
        seed=seed,
    )
