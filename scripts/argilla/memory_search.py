"""An in-memory search engine for argilla-server 2.8.0, registered as ``memory``.

argilla-server keeps records, responses and users in SQL and asks a search engine (normally
Elasticsearch) for record search, filters, sorting and progress counts. Elasticsearch cannot be
installed on a small box, so this module implements the same ``SearchEngine`` contract over
plain dicts, registered through argilla-server's own ``SearchEngine.register``. The index lives
in this process only: the launcher (``serve.py``) rebuilds it from SQL at start with
argilla-server's ``Reindexer`` and runs the rq worker in the same process, so jobs and API
requests see one index. Fine for one annotation team's few thousand records; deploy with
Elasticsearch (compose/) for more.

Runs inside argilla-server's own venv: imports argilla_server, never tunewright.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Record,
    Response,
    Suggestion,
    User,
    VectorSettings,
)
from argilla_server.search_engine import (
    AndFilter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)

ENGINE_NAME = "memory"
_PENDING = "pending"

# dataset id -> record id -> document; shared by every engine instance of this process
_INDEXES: dict[str, dict[str, dict[str, Any]]] = {}
_LOCK = threading.RLock()


def _response_doc(response: Response) -> dict[str, Any]:
    return {
        "id": str(response.id),
        "status": str(response.status),
        "user_id": str(response.user_id),
        "values": {q: (v or {}).get("value") for q, v in (response.values or {}).items()},
    }


def _record_doc(record: Record) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "external_id": record.external_id,
        "fields": dict(record.fields or {}),
        "metadata": dict(record.metadata_ or {}),
        "status": str(record.status),
        "inserted_at": record.inserted_at,
        "updated_at": record.updated_at,
        "responses": [_response_doc(r) for r in record.responses],
        "suggestions": {
            s.question.name: {"value": s.value, "agent": s.agent, "score": s.score, "type": s.type}
            for s in record.suggestions
        },
    }


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(_text(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _matches_text(doc: dict[str, Any], query: TextQuery | str | None) -> bool:
    """Every word of the query in the field (or any field), case-insensitive: ES's
    simple_query_string with default_operator AND, minus its operators."""
    if query is None:
        return True
    if isinstance(query, str):
        query = TextQuery(q=query)
    fields = doc["fields"]
    haystack = _text(fields.get(query.field) if query.field else fields).lower()
    return all(word in haystack for word in query.q.lower().split())


def _responses(doc: dict[str, Any], scope: ResponseFilterScope) -> list[dict[str, Any]]:
    user_id = str(scope.user.id) if scope.user is not None else None
    return [r for r in doc["responses"] if user_id is None or r["user_id"] == user_id]


def _scalar_values(doc: dict[str, Any], scope: Any) -> list[Any]:
    """The values a filter or sort on ``scope`` looks at in one document (may be several)."""
    if isinstance(scope, RecordFilterScope):
        value = doc.get(scope.property)
    elif isinstance(scope, MetadataFilterScope):
        value = doc["metadata"].get(scope.metadata_property)
    elif isinstance(scope, SuggestionFilterScope):
        value = doc["suggestions"].get(scope.question, {}).get(scope.property)
    elif isinstance(scope, ResponseFilterScope):
        key = scope.question or scope.property
        found: list[Any] = []
        for response in _responses(doc, scope):
            value = response["values"].get(key) if scope.question else response.get(key)
            found.extend(value if isinstance(value, list) else [value])
        return [v for v in found if v is not None]
    else:
        raise ValueError(f"cannot process search scope {scope}")
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v is not None]


def _matches(doc: dict[str, Any], filter: Any) -> bool:
    if filter is None:
        return True
    if isinstance(filter, AndFilter):
        return all(_matches(doc, f) for f in filter.filters)
    scope = filter.scope
    if (
        isinstance(filter, TermsFilter)
        and isinstance(scope, ResponseFilterScope)
        and scope.property == "status"
        and not scope.question
    ):
        # "pending" = no response (by this user); other statuses = a response with that status
        responses = _responses(doc, scope)
        wanted = {str(v) for v in filter.values}
        if _PENDING in wanted and not responses:
            return True
        return any(r["status"] in wanted for r in responses)
    values = _scalar_values(doc, scope)
    if isinstance(filter, TermsFilter):
        wanted = {str(v) for v in filter.values}
        return any(str(v) in wanted for v in values)
    if isinstance(filter, RangeFilter):
        return any(
            (filter.ge is None or v >= filter.ge) and (filter.le is None or v <= filter.le)
            for v in values
        )
    raise ValueError(f"cannot process filter {filter}")


def _sort_key(doc: dict[str, Any], scope: Any) -> Any:
    values = _scalar_values(doc, scope)
    if not values:
        return None
    if all(isinstance(v, int | float) for v in values):
        return sum(values) / len(values)  # ES sorts nested values by their average ("avg")
    return values[0]


def _sorted(docs: list[dict[str, Any]], sort: list[Order] | None) -> list[dict[str, Any]]:
    # last key first: Python's sort is stable, so earlier orders win; missing values last
    for order in reversed(sort or []):
        present = [d for d in docs if _sort_key(d, order.scope) is not None]
        missing = [d for d in docs if _sort_key(d, order.scope) is None]
        present.sort(key=lambda d: _sort_key(d, order.scope), reverse=str(order.order) == "desc")
        docs = present + missing
    return docs


@SearchEngine.register(engine_name=ENGINE_NAME)
class MemorySearchEngine(SearchEngine):
    @classmethod
    async def new_instance(cls) -> MemorySearchEngine:
        return cls()

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict[str, Any]:
        return {"distribution": ENGINE_NAME, "version": "1"}

    # --- index lifecycle ------------------------------------------------------------------

    async def create_index(self, dataset: Dataset) -> None:
        with _LOCK:
            _INDEXES.setdefault(str(dataset.id), {})

    async def delete_index(self, dataset: Dataset) -> None:
        with _LOCK:
            _INDEXES.pop(str(dataset.id), None)

    async def configure_metadata_property(
        self, dataset: Dataset, metadata_property: MetadataProperty
    ) -> None:
        pass  # documents keep all metadata; nothing to map

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        pass

    # --- documents ------------------------------------------------------------------------

    def _index(self, dataset_id: Any) -> dict[str, dict[str, Any]]:
        return _INDEXES.setdefault(str(dataset_id), {})

    def _doc(self, record: Record) -> dict[str, Any] | None:
        return self._index(record.dataset_id).get(str(record.id))

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        with _LOCK:
            index = self._index(dataset.id)
            for record in records:
                index[str(record.id)] = _record_doc(record)

    async def partial_record_update(self, record: Record, **update: Any) -> None:
        with _LOCK:
            doc = self._doc(record)
            if doc is not None:
                doc.update({k: str(v) if k == "status" else v for k, v in update.items()})

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        with _LOCK:
            index = self._index(dataset.id)
            for record in records:
                index.pop(str(record.id), None)

    async def update_record_response(self, response: Response) -> None:
        with _LOCK:
            doc = self._doc(response.record)
            if doc is not None:
                kept = [r for r in doc["responses"] if r["id"] != str(response.id)]
                doc["responses"] = [*kept, _response_doc(response)]

    async def delete_record_response(self, response: Response) -> None:
        with _LOCK:
            doc = self._doc(response.record)
            if doc is not None:
                doc["responses"] = [r for r in doc["responses"] if r["id"] != str(response.id)]

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        with _LOCK:
            doc = self._doc(suggestion.record)
            if doc is not None:
                doc["suggestions"][suggestion.question.name] = {
                    "value": suggestion.value,
                    "agent": suggestion.agent,
                    "score": suggestion.score,
                    "type": suggestion.type,
                }

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        with _LOCK:
            doc = self._doc(suggestion.record)
            if doc is not None:
                doc["suggestions"].pop(suggestion.question.name, None)

    # --- queries --------------------------------------------------------------------------

    def _docs(self, dataset: Dataset) -> list[dict[str, Any]]:
        with _LOCK:
            docs = list(self._index(dataset.id).values())
        return sorted(docs, key=lambda d: (d["inserted_at"], d["id"]))

    async def get_dataset_progress(self, dataset: Dataset) -> dict[str, Any]:
        if dataset.is_draft:
            return {}
        docs = self._docs(dataset)
        return {"total": len(docs), **Counter(d["status"] for d in docs)}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict[str, Any]:
        if dataset.is_draft:
            return {}
        statuses = [
            r["status"]
            for d in self._docs(dataset)
            for r in d["responses"]
            if r["user_id"] == str(user.id)
        ]
        return {"total": len(statuses), **Counter(statuses)}

    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Any = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: str | None = None,
    ) -> SearchResponses:
        hits = [d for d in self._docs(dataset) if _matches_text(d, query) and _matches(d, filter)]
        hits = _sorted(hits, sort)
        items = [SearchResponseItem(record_id=d["id"], score=1.0) for d in hits]
        return SearchResponses(items=items[offset : offset + limit], total=len(items))

    async def similarity_search(self, *args: Any, **kwargs: Any) -> SearchResponses:
        raise NotImplementedError("vector similarity search needs Elasticsearch")

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        values = [
            v
            for d in self._docs(metadata_property.dataset)
            for v in _scalar_values(d, MetadataFilterScope(metadata_property.name))
        ]
        kind = str(metadata_property.type)
        if kind == "integer":
            return IntegerMetadataMetrics(
                min=min(values, default=None), max=max(values, default=None)
            )
        if kind == "float":
            return FloatMetadataMetrics(
                min=min(values, default=None), max=max(values, default=None)
            )
        counts = Counter(str(v) for v in values)
        return TermsMetrics(
            total=len(counts),
            values=[TermsMetrics.TermCount(term=t, count=c) for t, c in counts.most_common()],
        )
