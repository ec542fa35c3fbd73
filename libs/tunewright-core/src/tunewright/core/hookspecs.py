"""Hook specifications: every hook a tunewright plugin can implement, in one module.

A plugin implements a hook by defining a function of the same name marked with
``tunewright.core.plugins.hookimpl``; it may accept any subset of the spec's arguments.
Hooks are always called with keyword arguments, through the typed methods of
:class:`tunewright.core.plugins.PluginManager`. No hook here is ``firstresult``: every
implementation is called and the return values are ignored.

Registration hooks run once per service start-up, one plugin at a time, before the service
takes any work; they must only call ``registry.add(...)`` and must not import heavy libraries
(do that inside the factory). Lifecycle hooks run inside the services; an exception raised by
one is never swallowed: it fails the start-up, job or run that called it.

``docs/plugins.md`` documents every hook with its exact signature (a test checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import pluggy

from tunewright.core.plugins import (
    PROJECT,
    ArtifactStoreRegistry,
    BaseModelRegistry,
    CurationFilterRegistry,
    DriftDetectorRegistry,
    FeedbackBackendRegistry,
    GeneratorRegistry,
    MetricRegistry,
    PiiRecognizerRegistry,
    ServingBackendRegistry,
    TrackerRegistry,
    TrainingMethodRegistry,
)

# private on purpose: plugins implement hooks, only this module declares them
_hookspec = pluggy.HookspecMarker(PROJECT)


# The trainer and evaluator own the real job/run types; lifecycle hooks see them through these
# read-only views, so that a plugin depends only on tunewright.core. Services may add fields.


class TrainJobView(Protocol):
    """What a lifecycle hook may read of a training job."""

    @property
    def id(self) -> str:
        """The job id."""
        ...

    @property
    def method(self) -> str:
        """The training method's registry name (``sft``, ``dpo``, ...)."""
        ...

    @property
    def base_model(self) -> str:
        """The base-model URI (``hf:org/model``, ``tiny:llama-xs``)."""
        ...


class EvalRunView(Protocol):
    """What a lifecycle hook may read of an evaluation run."""

    @property
    def id(self) -> str:
        """The evaluation run id."""
        ...

    @property
    def model(self) -> str:
        """The reference of the model under evaluation."""
        ...


# -------------------------------------------------------------------------
# Capability registration: one hook per registry, called once at start-up
# -------------------------------------------------------------------------


@_hookspec
def tw_register_base_models(registry: BaseModelRegistry) -> None:
    """Register base-model sources, keyed by URI scheme (``hf``, ``tiny``).

    :param registry: call ``registry.add(name=..., factory=...)`` once per scheme.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_training_methods(registry: TrainingMethodRegistry) -> None:
    """Register training methods (SFT, DPO, reward modelling, ...) with their config dataclass.

    :param registry: call ``registry.add(name=..., factory=..., config_cls=...,
        dataset_kinds=...)`` once per method.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_metrics(registry: MetricRegistry) -> None:
    """Register evaluation metrics.

    :param registry: call ``registry.add(name=..., factory=..., higher_is_better=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_pii_recognizers(registry: PiiRecognizerRegistry) -> None:
    """Register PII recognizers used by ingest's scrubbing step.

    :param registry: call ``registry.add(name=..., factory=..., entities=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_curation_filters(registry: CurationFilterRegistry) -> None:
    """Register curation filters that keep or drop records during ingest.

    :param registry: call ``registry.add(name=..., factory=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_generators(registry: GeneratorRegistry) -> None:
    """Register synthetic-data generators.

    :param registry: call ``registry.add(name=..., factory=..., dataset_kinds=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_feedback_backends(registry: FeedbackBackendRegistry) -> None:
    """Register human-feedback backends (Argilla, ...).

    :param registry: call ``registry.add(name=..., factory=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_trackers(registry: TrackerRegistry) -> None:
    """Register experiment trackers (MLflow, ...).

    :param registry: call ``registry.add(name=..., factory=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_artifact_stores(registry: ArtifactStoreRegistry) -> None:
    """Register artifact store backends (the core registers ``local`` and ``nats``).

    :param registry: call ``registry.add(name=..., factory=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_drift_detectors(registry: DriftDetectorRegistry) -> None:
    """Register drift detectors used by monitoring.

    :param registry: call ``registry.add(name=..., factory=...)``.
    :returns: nothing. Not firstresult: every plugin is called.
    """


@_hookspec
def tw_register_serving_backends(registry: ServingBackendRegistry) -> None:
    """Register inference backends of the serve service.

    :param registry: call ``registry.add(name=..., factory=...)``; ``factory(base_models=...,
        **params)`` returns a :class:`tunewright.core.serving.ServingBackend`.
    :returns: nothing. Not firstresult: every plugin is called.
    """


# -------------------------------------------------------------------------
# Service lifecycle
# -------------------------------------------------------------------------


@_hookspec
def tw_service_started(service: str, settings: Mapping[str, object]) -> None:
    """Called once when a service has loaded its plugins and is serving.

    :param service: the service name (``ingest``, ``synth``, ``trainer``, ``evaluator``,
        ``registry``).
    :param settings: the service's effective settings as a read-only JSON-like mapping
        (``model_dump(mode="json")`` of its settings model), secrets excluded.
    :returns: nothing. Not firstresult. An exception stops the service's start-up.
    """


# -------------------------------------------------------------------------
# Training (called in the trainer worker)
# -------------------------------------------------------------------------


@_hookspec
def tw_before_train(job: TrainJobView) -> None:
    """Called when a training job is about to start, after its config is validated.

    :param job: the job, read-only.
    :returns: nothing. Not firstresult. An exception fails the job with that error before
        any training step runs (a plugin can veto a job this way).
    """


@_hookspec
def tw_after_train(job: TrainJobView, result: Mapping[str, object]) -> None:
    """Called when a training job has succeeded and its artifacts are stored, before the
    ``succeeded`` event is published.

    :param job: the job, read-only.
    :param result: what the job produced (final metrics, artifact references); a plain
        mapping until the trainer service fixes its result type.
    :returns: nothing. Not firstresult. An exception fails the job.
    """


# -------------------------------------------------------------------------
# Evaluation (called in the evaluator)
# -------------------------------------------------------------------------


@_hookspec
def tw_after_evaluate(run: EvalRunView, result: Mapping[str, object]) -> None:
    """Called when an evaluation run has completed, before its result is published.

    :param run: the evaluation run, read-only.
    :param result: metric values and the gate verdict; a plain mapping until the evaluator
        service fixes its result type.
    :returns: nothing. Not firstresult. An exception fails the run.
    """
