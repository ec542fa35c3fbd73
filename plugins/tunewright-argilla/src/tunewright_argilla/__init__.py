"""The ``argilla`` feedback backend: people rank a model's answers in Argilla's UI.

Implements the feedback-backend contract of :mod:`tunewright_feedback` with the argilla SDK
2.8.0 against an Argilla server (``tunewright up --with-argilla`` starts one; any Argilla 2.x
server works). One Argilla dataset per feedback dataset, in one workspace:

- fields: ``prompt`` (a chat field: the conversation so far), ``response_0`` ..
  ``response_{N-1}`` (the sampled answers) and ``reference`` (the dataset's own answer, shown
  for context, optional);
- one ``RankingQuestion`` named ``ranking`` whose options are the response fields ("Response
  1" .. "Response N"); annotators order them best first;
- each record keeps tunewright's own record (prompt messages, responses, model and dataset
  version ids) as JSON in its metadata, so :meth:`records` returns exactly what was published;
- the task distribution asks for ``annotators_per_record`` submissions before a record counts
  as completed (Argilla then stops showing it to further annotators).

:meth:`collect` returns one ranking per *submitted* response (drafts and discards are
ignored), with the annotator's Argilla username as provenance: several annotators, several
rankings. Drafts never count; a record's ranking is only as complete as the annotator left it.

Reviews of synthetic rows (the optional review extension of the contract, for synthetic
examples with ``human_review``) go to their own Argilla dataset: fields ``request`` and
``answer`` (the synthetic exchange) and ``category`` (optional), one ``LabelQuestion`` named
``review`` with the labels ``accept`` / ``reject``, the row as JSON in the record's metadata.
:meth:`collect_reviews` returns one decision per *submitted* response with the annotator's
username; drafts and discards are not decisions.

Parameters (``feedback_backend: {name: argilla, params: {...}}``): ``api_url`` (default
``ARGILLA_API_URL``), ``workspace`` (``ARGILLA_WORKSPACE``, default ``tunewright``),
``annotators_per_record`` (default 1), ``timeout_s`` (HTTP timeout, default 30). The key is
never a param (params are stored with the job, published in events and returned by Get RPCs):
it is ``ARGILLA_API_KEY`` (an owner or admin key) of the process that runs the backend, and it
is only sent to ``ARGILLA_API_URL``. A spec that names another ``api_url`` gets no key and is
refused, so it cannot send the owner key to a server of its choosing.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewright.core.plugins import FeedbackBackendRegistry, hookimpl

QUESTION = "ranking"
REVIEW_QUESTION = "review"
ACCEPT, REJECT = "accept", "reject"
METADATA_KEY = "tunewright"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class ArgillaFeedbackError(RuntimeError):
    """Argilla is unreachable, misconfigured, or holds a dataset we cannot use."""


def _response_field(i: int) -> str:
    return f"response_{i}"


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


class ArgillaFeedback:
    """Feedback backend on an Argilla server (see the module docstring).

    ``api_key`` is for in-process callers (tests, scripts); the registered factory,
    :func:`from_params`, refuses it because its params come from job specs.
    """

    simulated = False

    def __init__(
        self,
        *,
        directory: Path | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        workspace: str | None = None,
        annotators_per_record: int = 1,
        timeout_s: float = 30,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError(
                f"unknown argilla backend params: {', '.join(sorted(unknown))} (known: api_url, "
                "workspace, annotators_per_record, timeout_s)"
            )
        configured_url = os.environ.get("ARGILLA_API_URL", "")
        self.api_url = (api_url or configured_url).rstrip("/")
        if api_key:
            self._api_key = api_key
        elif _same_url(self.api_url, configured_url):
            self._api_key = os.environ.get("ARGILLA_API_KEY", "")
        else:
            # the env key belongs to ARGILLA_API_URL: never send it anywhere else
            raise ValueError(
                f"no Argilla key for api_url {self.api_url or '(unset)'}: ARGILLA_API_KEY is "
                f"only sent to ARGILLA_API_URL ({configured_url or 'unset'}); leave api_url "
                "out of the params, or point ARGILLA_API_URL of the synth service at it"
            )
        if not self.api_url or not self._api_key:
            raise ValueError(
                "the argilla feedback backend needs ARGILLA_API_URL and ARGILLA_API_KEY in the "
                "environment of the synth service"
            )
        self.workspace = workspace or os.environ.get("ARGILLA_WORKSPACE", "") or "tunewright"
        self.annotators_per_record = int(annotators_per_record)
        self.timeout_s = float(timeout_s)
        self._client: Any = None

    # --- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            import argilla as rg

            try:
                self._client = rg.Argilla(
                    api_url=self.api_url, api_key=self._api_key, timeout=int(self.timeout_s)
                )
            except Exception as exc:  # the SDK raises several types for "cannot reach"
                raise ArgillaFeedbackError(
                    f"cannot reach Argilla at {self.api_url}: {type(exc).__name__}"
                ) from None
        return self._client

    def _dataset(self, name: str) -> Any:
        if not _NAME_RE.match(name):
            raise ValueError(f"feedback dataset name {name!r} must be [A-Za-z0-9_.-]{{1,128}}")
        with warnings.catch_warnings():  # "not found" is an answer here, not a problem
            warnings.simplefilter("ignore", UserWarning)
            return self.client.datasets(name=name, workspace=self.workspace)

    def _workspace(self) -> Any:
        import argilla as rg

        workspace = self.client.workspaces(self.workspace)
        if workspace is None:
            workspace = rg.Workspace(name=self.workspace, client=self.client).create()
        return workspace

    def _create(self, name: str, responses: int) -> Any:
        import argilla as rg

        settings = rg.Settings(
            guidelines="Rank the answers to the customer's last message, best first. The "
            "reference is the answer the support team gave; it is context, not a candidate.",
            fields=[
                rg.ChatField(name="prompt", title="Conversation"),
                *(
                    rg.TextField(name=_response_field(i), title=f"Response {i + 1}")
                    for i in range(responses)
                ),
                rg.TextField(name="reference", title="Reference answer", required=False),
            ],
            questions=[
                rg.RankingQuestion(
                    name=QUESTION,
                    title="Rank the responses, best first",
                    values={_response_field(i): f"Response {i + 1}" for i in range(responses)},
                )
            ],
            allow_extra_metadata=True,
            distribution=rg.TaskDistribution(min_submitted=self.annotators_per_record),
        )
        dataset = rg.Dataset(
            name=name, workspace=self._workspace(), settings=settings, client=self.client
        )
        return dataset.create()

    def _create_review(self, name: str) -> Any:
        import argilla as rg

        settings = rg.Settings(
            guidelines="Accept a synthetic example when the request is realistic for this "
            "category and the answer is correct, helpful and safe to train on; reject it "
            "otherwise. Only accepted examples join the dataset.",
            fields=[
                rg.TextField(name="request", title="Request"),
                rg.TextField(name="answer", title="Answer"),
                rg.TextField(name="category", title="Category", required=False),
            ],
            questions=[
                rg.LabelQuestion(
                    name=REVIEW_QUESTION,
                    title="Accept this example for training?",
                    labels={ACCEPT: "Accept", REJECT: "Reject"},
                )
            ],
            allow_extra_metadata=True,
            distribution=rg.TaskDistribution(min_submitted=self.annotators_per_record),
        )
        dataset = rg.Dataset(
            name=name, workspace=self._workspace(), settings=settings, client=self.client
        )
        return dataset.create()

    def _usernames(self) -> dict[str, str]:
        return {str(u.id): u.username for u in self.client.users}

    # --- contract -------------------------------------------------------------------------

    def publish(self, dataset: str, records: Sequence[dict[str, Any]]) -> str:
        import argilla as rg

        counts = {len(r["responses"]) for r in records}
        if len(counts) > 1:
            raise ValueError("every record of one feedback dataset needs the same response count")
        found = self._dataset(dataset)
        if found is None:
            if not records:
                raise ValueError(f"nothing to publish to new feedback dataset {dataset!r}")
            found = self._create(dataset, counts.pop())
        else:
            fields = {f.name for f in found.settings.fields}
            missing = {_response_field(i) for i in range(max(counts, default=0))} - fields
            if missing:
                raise ArgillaFeedbackError(
                    f"Argilla dataset {dataset!r} has no fields {sorted(missing)}: it was "
                    "created for fewer responses per prompt"
                )
        found.records.log(
            [
                rg.Record(
                    id=record["record_id"],
                    fields={
                        "prompt": record["prompt"],
                        **{_response_field(i): text for i, text in enumerate(record["responses"])},
                        **({"reference": record["reference"]} if record.get("reference") else {}),
                    },
                    metadata={METADATA_KEY: json.dumps(record, ensure_ascii=False)},
                )
                for record in records
            ]
        )
        return f"{self.api_url}/dataset/{found.id}/annotation-mode"

    def _records(self, dataset: str, *, with_responses: bool) -> list[Any]:
        found = self._dataset(dataset)
        if found is None:
            return []
        return list(found.records(with_responses=with_responses, with_suggestions=False))

    def records(self, dataset: str) -> list[dict[str, Any]]:
        out = []
        for record in self._records(dataset, with_responses=False):
            raw = (record.metadata or {}).get(METADATA_KEY)
            if raw:
                out.append(json.loads(raw))
        return out

    def collect(self, dataset: str) -> list[dict[str, Any]]:
        usernames = self._usernames()
        rankings = []
        for record in self._records(dataset, with_responses=True):
            # the raw API model: the SDK's ranking values drop the rank numbers, and the UI
            # stores options in question order with their ranks
            for response in record._model.responses or []:
                if _status(response.status) != "submitted":
                    continue
                order = _ranking((response.values or {}).get(QUESTION, {}).get("value"))
                if order is None:
                    continue
                rankings.append(
                    {
                        "record_id": str(record.id),
                        "ranking": order,
                        "annotator": usernames.get(str(response.user_id), str(response.user_id)),
                    }
                )
        return rankings

    # --- review extension -----------------------------------------------------------------

    def publish_review(self, dataset: str, rows: Sequence[dict[str, Any]]) -> str:
        import argilla as rg

        found = self._dataset(dataset)
        if found is None:
            if not rows:
                raise ValueError(f"nothing to publish to new review dataset {dataset!r}")
            found = self._create_review(dataset)
        elif REVIEW_QUESTION not in {q.name for q in found.settings.questions}:
            raise ArgillaFeedbackError(
                f"Argilla dataset {dataset!r} has no {REVIEW_QUESTION!r} question: it is not "
                "a review dataset"
            )
        found.records.log(
            [
                rg.Record(
                    id=row["record_id"],
                    fields={
                        "request": row["request"],
                        "answer": row["answer"],
                        **({"category": row["category"]} if row.get("category") else {}),
                    },
                    metadata={METADATA_KEY: json.dumps(row, ensure_ascii=False)},
                )
                for row in rows
            ]
        )
        return f"{self.api_url}/dataset/{found.id}/annotation-mode"

    def collect_reviews(self, dataset: str) -> list[dict[str, Any]]:
        usernames = self._usernames()
        reviews = []
        for record in self._records(dataset, with_responses=True):
            # raw responses, as for rankings: status and the user id of each
            for response in record._model.responses or []:
                if _status(response.status) != "submitted":
                    continue
                label = (response.values or {}).get(REVIEW_QUESTION, {}).get("value")
                if label not in (ACCEPT, REJECT):
                    continue
                reviews.append(
                    {
                        "record_id": str(record.id),
                        "accepted": label == ACCEPT,
                        "annotator": usernames.get(str(response.user_id), str(response.user_id)),
                    }
                )
        return reviews


def _status(status: Any) -> str:
    return str(getattr(status, "value", status))


def _ranking(value: Any) -> list[int] | None:
    """``[{"value": "response_2", "rank": 1}, ...]`` -> response indexes, best first (equal
    ranks keep question order); None when it is not a complete ranking of 2+ responses."""
    if not isinstance(value, list) or len(value) < 2:
        return None
    ranked = []
    for position, option in enumerate(value):
        name = option.get("value") if isinstance(option, dict) else option
        rank = option.get("rank") if isinstance(option, dict) else None
        match = re.fullmatch(r"response_(\d+)", str(name))
        if match is None:
            return None
        ranked.append((rank if rank is not None else position + 1, position, int(match.group(1))))
    return [index for _, _, index in sorted(ranked)]


def from_params(**params: Any) -> ArgillaFeedback:
    """The backend from a job's params, which may not carry a key: they are stored and
    published with the job."""
    if "api_key" in params:
        raise ValueError(
            "the argilla backend's params may not carry api_key: params are stored and "
            "published with the job; set ARGILLA_API_KEY (with ARGILLA_API_URL) in the "
            "environment of the synth service"
        )
    return ArgillaFeedback(**params)


@hookimpl
def tw_register_feedback_backends(registry: FeedbackBackendRegistry) -> None:
    registry.add(
        name="argilla",
        factory=from_params,
        description="Human rankings in Argilla: records with a ranking question; submitted "
        "rankings come back with the annotator's username. Reviews: synthetic rows with an "
        "accept/reject label question.",
    )
