"""The tunewright plugin system: typed capability registries and the plugin manager.

A plugin is any module (or object) published on the entry-point group ``tunewright`` whose
functions are marked with :data:`hookimpl`. Capabilities (base models, training methods,
metrics, ...) arrive through the ``tw_register_*`` hooks, each of which receives one typed
registry; the hooks themselves are specified in :mod:`tunewright.core.hookspecs`. The
built-in capabilities of the core are a plugin too (:mod:`tunewright.core.builtin_plugins`),
found through the core's own entry point exactly like a third-party one.

Start-up is strict: a plugin that fails to import, implements an unknown hook or claims a
name another plugin already holds stops the service with an error naming it. Skipping a
plugin is an explicit choice (``plugins.disabled`` in the settings or ``TW_PLUGINS_DISABLED``).

References: pluggy (https://pluggy.readthedocs.io), tox 4 ``tox/plugin/manager.py`` (typed
keyword-only hook calls), PEFT ``register_peft_method`` (keyword-only registration that
rejects bad and duplicate names), datasette ``plugins.py`` (built-ins loaded like plugins).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

import pluggy

from tunewright.core.errors import InvalidArgument

if TYPE_CHECKING:
    from tunewright.core.hookspecs import EvalRunView, TrainJobView

__all__ = [
    "DISABLED_ENV_VAR",
    "ENTRY_POINT_GROUP",
    "METRIC_NEEDS",
    "NAME_PATTERN",
    "PROJECT",
    "ArtifactStoreRegistry",
    "ArtifactStoreSpec",
    "BaseModelRegistry",
    "BaseModelSpec",
    "CapabilityRegistry",
    "CapabilitySpec",
    "CurationFilterRegistry",
    "CurationFilterSpec",
    "DriftDetectorRegistry",
    "DriftDetectorSpec",
    "Factory",
    "FeedbackBackendRegistry",
    "FeedbackBackendSpec",
    "GeneratorRegistry",
    "GeneratorSpec",
    "MetricRegistry",
    "MetricSpec",
    "PiiRecognizerRegistry",
    "PiiRecognizerSpec",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginManager",
    "RegistrationError",
    "Registries",
    "ServingBackendRegistry",
    "ServingBackendSpec",
    "TrackerRegistry",
    "TrackerSpec",
    "TrainingMethodRegistry",
    "TrainingMethodSpec",
    "UnknownCapabilityError",
    "disabled_from_env",
    "hookimpl",
]

log = logging.getLogger(__name__)

PROJECT: Final = "tunewright"
ENTRY_POINT_GROUP: Final = "tunewright"
DISABLED_ENV_VAR: Final = "TW_PLUGINS_DISABLED"

#: Marks a function in a plugin module as the implementation of the hook of the same name.
hookimpl: Final = pluggy.HookimplMarker(PROJECT)

#: Capability names, dataset kinds: lowercase, start with a letter; ``.`` ``_`` ``-`` allowed
#: so that third-party plugins can prefix their names (``acme.toxicity``).
NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_.-]*$")
# PII entity types follow presidio's spelling: EMAIL_ADDRESS, PHONE_NUMBER, ...
_ENTITY_PATTERN: Final = re.compile(r"^[A-Z][A-Z0-9_]*$")

#: What a registry entry builds its capability with. It is called by the service that uses
#: the capability, never at registration, so a plugin imports heavy libraries inside it.
Factory = Callable[..., object]


# --- errors -------------------------------------------------------------------------------


class PluginError(Exception):
    """Base class of every plugin-system error."""


class PluginLoadError(PluginError):
    """A plugin could not be imported, registered, validated or could not register its
    capabilities. The message names the plugin and its distribution."""


class RegistrationError(PluginError, ValueError):
    """A plugin tried to register a capability with a bad or already taken name or field."""


class UnknownCapabilityError(PluginError, InvalidArgument):
    """A capability was asked for by a name no loaded plugin registered.

    It is an :class:`~tunewright.core.errors.InvalidArgument`: a request naming a metric or
    training method that is not installed is a bad request, and is reported as one.
    """


# --- capability specs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CapabilitySpec:
    """One registry entry. ``plugin`` is the name of the plugin that registered it."""

    name: str
    factory: Factory
    description: str
    plugin: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseModelSpec(CapabilitySpec):
    """A base-model source; ``name`` is the URI scheme (``hf`` for ``hf:org/model``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingMethodSpec(CapabilitySpec):
    """A training method (``sft``, ``dpo``, ...) with the dataclass type of its config and
    the dataset kinds (``sft``, ``preference``, ``prompt``, ...) it trains on."""

    config_cls: type[Any]
    dataset_kinds: frozenset[str]


#: What an evaluation metric is computed from (``MetricSpec.needs``):
#: ``outputs``: generated texts against reference texts, ``metric(predictions, references)``;
#: ``model``: the model itself (log-probabilities, reward scores, raw generations),
#: ``metric.score_model(...)``; ``judge``: candidate and baseline outputs compared by a judge
#: model, ``metric.judge(...)``. The exact call contracts are in docs/plugins.md.
METRIC_NEEDS: Final = frozenset({"outputs", "model", "judge"})


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSpec(CapabilitySpec):
    """An evaluation metric; ``higher_is_better`` tells the gate which way is an improvement,
    ``needs`` what the evaluator must give it (one of :data:`METRIC_NEEDS`)."""

    higher_is_better: bool
    needs: str = "outputs"


@dataclass(frozen=True, slots=True, kw_only=True)
class PiiRecognizerSpec(CapabilitySpec):
    """A PII recognizer and the entity types it finds (``EMAIL_ADDRESS``, ...)."""

    entities: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class CurationFilterSpec(CapabilitySpec):
    """A curation filter that keeps or drops records during ingest."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneratorSpec(CapabilitySpec):
    """A synthetic-data generator and the dataset kinds it produces."""

    dataset_kinds: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackBackendSpec(CapabilitySpec):
    """A human-feedback backend (Argilla, ...) that collects rankings and labels."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerSpec(CapabilitySpec):
    """An experiment tracker (MLflow, ...) that receives training metrics."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactStoreSpec(CapabilitySpec):
    """A content-addressed artifact store backend (``local``, ``nats``, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftDetectorSpec(CapabilitySpec):
    """A drift detector that compares live traffic with the training data."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServingBackendSpec(CapabilitySpec):
    """An inference backend of the serve service (``transformers``, ``vllm``, ...); its factory
    returns a :class:`tunewright.core.serving.ServingBackend`."""


# --- registries -----------------------------------------------------------------------------

SpecT = TypeVar("SpecT", bound=CapabilitySpec)

# the plugin label of entries added outside a register hook (a script, a test)
_DIRECT: Final = "(registered directly)"


class CapabilityRegistry(Generic[SpecT]):
    """Entries of one capability, by name. Subclasses add a typed, keyword-only ``add``.

    The plugin manager fills each registry once at start-up and then seals it.
    """

    #: singular noun used in messages ("metric", "training method")
    kind: ClassVar[str] = "capability"

    def __init__(self) -> None:
        self._specs: dict[str, SpecT] = {}
        self._plugin = _DIRECT
        self._sealed = False

    def get(self, name: str) -> SpecT:
        """Return the entry called ``name``; the error lists the registered names."""
        try:
            return self._specs[name]
        except KeyError:
            registered = ", ".join(self.names()) or "none"
            raise UnknownCapabilityError(
                f"no {self.kind} named {name!r}; registered: {registered}. "
                f"Is the plugin that provides it installed and not disabled?",
                reason="UNKNOWN_CAPABILITY",
            ) from None

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._specs))

    def __iter__(self) -> Iterator[SpecT]:
        return iter([self._specs[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.names())})"

    def _add(self, spec: SpecT) -> SpecT:
        if self._sealed:
            raise RegistrationError(
                f"cannot add {self.kind} {spec.name!r}: registries are built once at start-up, "
                f"inside the tw_register_* hooks"
            )
        if not isinstance(spec.name, str) or not NAME_PATTERN.fullmatch(spec.name):
            raise RegistrationError(
                f"plugin {spec.plugin!r}: {self.kind} name {spec.name!r} must match "
                f"{NAME_PATTERN.pattern}"
            )
        if not callable(spec.factory):
            raise RegistrationError(
                f"plugin {spec.plugin!r}: {self.kind} {spec.name!r} factory must be callable, "
                f"got {spec.factory!r}"
            )
        if not isinstance(spec.description, str):
            raise RegistrationError(
                f"plugin {spec.plugin!r}: {self.kind} {spec.name!r} description must be a str"
            )
        existing = self._specs.get(spec.name)
        if existing is not None:
            raise RegistrationError(
                f"{self.kind} {spec.name!r} from plugin {spec.plugin!r} is already registered "
                f"by plugin {existing.plugin!r}; disable one of them (settings "
                f"plugins.disabled or {DISABLED_ENV_VAR})"
            )
        self._specs[spec.name] = spec
        return spec

    def _names_set(
        self, field: str, name: str, values: Iterable[str], pattern: re.Pattern[str]
    ) -> frozenset[str]:
        # a bare string would be iterated character by character: reject it explicitly
        if isinstance(values, str):
            raise RegistrationError(
                f"plugin {self._plugin!r}: {self.kind} {name!r} {field} must be a collection "
                f"of strings, not the string {values!r}"
            )
        result = frozenset(values)
        if not result or not all(isinstance(v, str) and pattern.fullmatch(v) for v in result):
            raise RegistrationError(
                f"plugin {self._plugin!r}: {self.kind} {name!r} {field} must be a non-empty "
                f"collection of names matching {pattern.pattern}; got {sorted(map(repr, result))}"
            )
        return result

    @contextmanager
    def _registering_for(self, plugin: str) -> Iterator[None]:
        # entries added while a plugin's register hook runs are recorded as that plugin's
        self._plugin = plugin
        try:
            yield
        finally:
            self._plugin = _DIRECT

    def _seal(self) -> None:
        self._sealed = True


class BaseModelRegistry(CapabilityRegistry[BaseModelSpec]):
    kind = "base model scheme"

    def add(self, *, name: str, factory: Factory, description: str = "") -> BaseModelSpec:
        """Register a base-model source for URIs ``<name>:<reference>``.

        :param name: the URI scheme, e.g. ``hf`` or ``tiny``.
        :param factory: called as ``factory(reference, **options)`` with the part after the
            scheme; returns the loaded model (the trainer service defines the exact type).
        """
        return self._add(
            BaseModelSpec(name=name, factory=factory, description=description, plugin=self._plugin)
        )


class TrainingMethodRegistry(CapabilityRegistry[TrainingMethodSpec]):
    kind = "training method"

    def add(
        self,
        *,
        name: str,
        factory: Factory,
        description: str = "",
        config_cls: type[Any],
        dataset_kinds: Iterable[str],
    ) -> TrainingMethodSpec:
        """Register a training method.

        :param config_cls: a dataclass type; a job's method config is parsed into it.
        :param dataset_kinds: the dataset kinds the method trains on (``sft``,
            ``preference``, ``prompt``, ...).
        """
        if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
            raise RegistrationError(
                f"plugin {self._plugin!r}: training method {name!r} config_cls must be a "
                f"dataclass type, got {config_cls!r}"
            )
        kinds = self._names_set("dataset_kinds", name, dataset_kinds, NAME_PATTERN)
        return self._add(
            TrainingMethodSpec(
                name=name,
                factory=factory,
                description=description,
                plugin=self._plugin,
                config_cls=config_cls,
                dataset_kinds=kinds,
            )
        )


class MetricRegistry(CapabilityRegistry[MetricSpec]):
    kind = "metric"

    def add(
        self,
        *,
        name: str,
        factory: Factory,
        description: str = "",
        higher_is_better: bool,
        needs: str = "outputs",
    ) -> MetricSpec:
        """Register an evaluation metric.

        :param higher_is_better: whether a larger value is an improvement (the gate uses it).
        :param needs: what the metric is computed from: ``outputs`` (generated vs reference
            texts, the default), ``model`` (scores the model itself) or ``judge`` (a judge
            model compares candidate and baseline outputs); see :data:`METRIC_NEEDS`.
        """
        if not isinstance(higher_is_better, bool):
            raise RegistrationError(
                f"plugin {self._plugin!r}: metric {name!r} higher_is_better must be a bool, "
                f"got {higher_is_better!r}"
            )
        if needs not in METRIC_NEEDS:
            raise RegistrationError(
                f"plugin {self._plugin!r}: metric {name!r} needs must be one of "
                f"{', '.join(sorted(METRIC_NEEDS))}, got {needs!r}"
            )
        return self._add(
            MetricSpec(
                name=name,
                factory=factory,
                description=description,
                plugin=self._plugin,
                higher_is_better=higher_is_better,
                needs=needs,
            )
        )


class PiiRecognizerRegistry(CapabilityRegistry[PiiRecognizerSpec]):
    kind = "PII recognizer"

    def add(
        self, *, name: str, factory: Factory, description: str = "", entities: Iterable[str]
    ) -> PiiRecognizerSpec:
        """Register a PII recognizer.

        :param entities: the entity types it finds, presidio spelling (``EMAIL_ADDRESS``).
        """
        found = self._names_set("entities", name, entities, _ENTITY_PATTERN)
        return self._add(
            PiiRecognizerSpec(
                name=name,
                factory=factory,
                description=description,
                plugin=self._plugin,
                entities=found,
            )
        )


class CurationFilterRegistry(CapabilityRegistry[CurationFilterSpec]):
    kind = "curation filter"

    def add(self, *, name: str, factory: Factory, description: str = "") -> CurationFilterSpec:
        """Register a curation filter."""
        return self._add(
            CurationFilterSpec(
                name=name, factory=factory, description=description, plugin=self._plugin
            )
        )


class GeneratorRegistry(CapabilityRegistry[GeneratorSpec]):
    kind = "generator"

    def add(
        self, *, name: str, factory: Factory, description: str = "", dataset_kinds: Iterable[str]
    ) -> GeneratorSpec:
        """Register a synthetic-data generator.

        :param dataset_kinds: the dataset kinds it produces (``sft``, ``preference``, ...).
        """
        kinds = self._names_set("dataset_kinds", name, dataset_kinds, NAME_PATTERN)
        return self._add(
            GeneratorSpec(
                name=name,
                factory=factory,
                description=description,
                plugin=self._plugin,
                dataset_kinds=kinds,
            )
        )


class FeedbackBackendRegistry(CapabilityRegistry[FeedbackBackendSpec]):
    kind = "feedback backend"

    def add(self, *, name: str, factory: Factory, description: str = "") -> FeedbackBackendSpec:
        """Register a human-feedback backend."""
        return self._add(
            FeedbackBackendSpec(
                name=name, factory=factory, description=description, plugin=self._plugin
            )
        )


class TrackerRegistry(CapabilityRegistry[TrackerSpec]):
    kind = "tracker"

    def add(self, *, name: str, factory: Factory, description: str = "") -> TrackerSpec:
        """Register an experiment tracker."""
        return self._add(
            TrackerSpec(name=name, factory=factory, description=description, plugin=self._plugin)
        )


class ArtifactStoreRegistry(CapabilityRegistry[ArtifactStoreSpec]):
    kind = "artifact store"

    def add(self, *, name: str, factory: Factory, description: str = "") -> ArtifactStoreSpec:
        """Register an artifact store backend; ``factory(**options)`` returns the store."""
        return self._add(
            ArtifactStoreSpec(
                name=name, factory=factory, description=description, plugin=self._plugin
            )
        )


class DriftDetectorRegistry(CapabilityRegistry[DriftDetectorSpec]):
    kind = "drift detector"

    def add(self, *, name: str, factory: Factory, description: str = "") -> DriftDetectorSpec:
        """Register a drift detector."""
        return self._add(
            DriftDetectorSpec(
                name=name, factory=factory, description=description, plugin=self._plugin
            )
        )


class ServingBackendRegistry(CapabilityRegistry[ServingBackendSpec]):
    kind = "serving backend"

    def add(self, *, name: str, factory: Factory, description: str = "") -> ServingBackendSpec:
        """Register a serving backend; ``factory(base_models=..., **params)`` returns it."""
        return self._add(
            ServingBackendSpec(
                name=name, factory=factory, description=description, plugin=self._plugin
            )
        )


@dataclass(frozen=True, slots=True)
class Registries:
    """Every capability registry. Field ``<x>`` is filled by the hook ``tw_register_<x>``."""

    base_models: BaseModelRegistry = dataclasses.field(default_factory=BaseModelRegistry)
    training_methods: TrainingMethodRegistry = dataclasses.field(
        default_factory=TrainingMethodRegistry
    )
    metrics: MetricRegistry = dataclasses.field(default_factory=MetricRegistry)
    pii_recognizers: PiiRecognizerRegistry = dataclasses.field(
        default_factory=PiiRecognizerRegistry
    )
    curation_filters: CurationFilterRegistry = dataclasses.field(
        default_factory=CurationFilterRegistry
    )
    generators: GeneratorRegistry = dataclasses.field(default_factory=GeneratorRegistry)
    feedback_backends: FeedbackBackendRegistry = dataclasses.field(
        default_factory=FeedbackBackendRegistry
    )
    trackers: TrackerRegistry = dataclasses.field(default_factory=TrackerRegistry)
    artifact_stores: ArtifactStoreRegistry = dataclasses.field(
        default_factory=ArtifactStoreRegistry
    )
    drift_detectors: DriftDetectorRegistry = dataclasses.field(
        default_factory=DriftDetectorRegistry
    )
    serving_backends: ServingBackendRegistry = dataclasses.field(
        default_factory=ServingBackendRegistry
    )

    def items(self) -> Iterator[tuple[str, CapabilityRegistry[Any]]]:
        """``(field name, registry)`` pairs, in declaration order."""
        for f in dataclasses.fields(self):
            yield f.name, getattr(self, f.name)


# --- plugin manager -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A loaded plugin: its entry-point name (what ``plugins.disabled`` lists), the module
    it points at, and the distribution that declared it (``None`` for ``builtins=``)."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        if self.distribution is None:
            return repr(self.name)
        return f"{self.name!r} (distribution {self.distribution} {self.version})"


def disabled_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Plugin names listed, comma-separated, in ``TW_PLUGINS_DISABLED``."""
    raw = (os.environ if environ is None else environ).get(DISABLED_ENV_VAR, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


class PluginManager:
    """Loads plugins once, builds the registries, and calls lifecycle hooks.

    Every hook call goes through a typed, keyword-only method here (pluggy rejects positional
    hook arguments; the methods make the signatures visible to type checkers too).
    """

    def __init__(self) -> None:
        # hookspecs imports this module for the registry types: import it here, not at the top
        from tunewright.core import hookspecs

        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._loaded: list[tuple[PluginInfo, object]] = []
        self._registries: Registries | None = None

    @property
    def plugins(self) -> tuple[PluginInfo, ...]:
        """The loaded plugins, in load order."""
        return tuple(info for info, _ in self._loaded)

    @property
    def registries(self) -> Registries:
        """The registries built by :meth:`load`."""
        if self._registries is None:
            raise PluginError("plugins are not loaded yet: call PluginManager.load() first")
        return self._registries

    def load(
        self, *, disabled: Iterable[str] = (), builtins: Sequence[ModuleType] = ()
    ) -> Registries:
        """Load every plugin on the ``tunewright`` entry-point group and build the registries.

        :param disabled: plugin (entry-point) names to skip before importing them, e.g. the
            settings field ``plugins.disabled``; ``TW_PLUGINS_DISABLED`` is added to it.
        :param builtins: extra plugin modules registered first under their module name, for
            code that ships plugins without an entry point (tests, embedded use).
        :raises PluginLoadError: a plugin failed to import, validate or register.
        :raises RegistrationError: a plugin registered a bad or already taken name.
        """
        if self._registries is not None:
            raise PluginError("PluginManager.load() runs once per manager")
        skip = frozenset(disabled) | disabled_from_env()
        skipped: set[str] = set()

        for module in builtins:
            if module.__name__ in skip:
                skipped.add(module.__name__)
                continue
            self._register(PluginInfo(name=module.__name__, module=module.__name__), module)

        # sorted: load order (and so every message) must not depend on sys.path order
        for ep in sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
        ):
            if ep.name in skip:
                skipped.add(ep.name)
                continue
            dist = ep.dist
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {info.label} failed to import {ep.value!r}: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall it, or disable it with "
                    f"{DISABLED_ENV_VAR}={ep.name}"
                ) from exc
            self._register(info, plugin)

        if skipped:
            log.info("plugins disabled: %s", ", ".join(sorted(skipped)))
        if unmatched := skip - skipped:
            # not an error: one disable list is shared by services with different plugins
            log.info("disabled plugins not installed here: %s", ", ".join(sorted(unmatched)))

        self._check_pending()
        self._registries = self._build_registries()
        return self._registries

    # -- lifecycle hooks (see tunewright.core.hookspecs for their semantics) --

    def service_started(self, *, service: str, settings: Mapping[str, object]) -> None:
        self._require_loaded()
        self._pm.hook.tw_service_started(service=service, settings=settings)

    def before_train(self, *, job: TrainJobView) -> None:
        self._require_loaded()
        self._pm.hook.tw_before_train(job=job)

    def after_train(self, *, job: TrainJobView, result: Mapping[str, object]) -> None:
        self._require_loaded()
        self._pm.hook.tw_after_train(job=job, result=result)

    def after_evaluate(self, *, run: EvalRunView, result: Mapping[str, object]) -> None:
        self._require_loaded()
        self._pm.hook.tw_after_evaluate(run=run, result=result)

    # -- internals --

    def _register(self, info: PluginInfo, plugin: object) -> None:
        for other, _ in self._loaded:
            if other.name == info.name:
                raise PluginLoadError(
                    f"two plugins are named {info.name!r}: {other.label} and {info.label}"
                )
        try:
            self._pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"plugin {info.label} is invalid: {exc}") from exc
        except ValueError as exc:  # pluggy: the same object is already registered
            raise PluginLoadError(f"plugin {info.label} cannot be registered: {exc}") from exc
        self._loaded.append((info, plugin))
        log.debug("loaded plugin %s", info.label)

    def _info(self, plugin: object) -> PluginInfo:
        return next(info for info, p in self._loaded if p is plugin)

    def _check_pending(self) -> None:
        # an impl marked @hookimpl whose name matches no spec is a typo or a plugin written
        # for another tunewright version: fail now rather than silently never call it
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = sorted(
                f"{self._info(impl.plugin).label} implements {name!r}"
                for name, caller in vars(self._pm.hook).items()
                if not name.startswith("_") and not caller.has_spec()
                for impl in caller.get_hookimpls()
                if not impl.optionalhook
            )
            known = sorted(
                name
                for name, caller in vars(self._pm.hook).items()
                if not name.startswith("_") and caller.has_spec()
            )
            raise PluginLoadError(
                f"unknown hook: {'; '.join(unknown)}. Known hooks: {', '.join(known)}. "
                f"Check the spelling, or the plugin needs another tunewright-core version"
            ) from exc

    def _build_registries(self) -> Registries:
        registries = Registries()
        for field_name, registry in registries.items():
            hook_name = f"tw_register_{field_name}"
            implementers = [
                impl.plugin for impl in getattr(self._pm.hook, hook_name).get_hookimpls()
            ]
            # one call per plugin, so every entry records the plugin that added it
            for info, plugin in self._loaded:
                if not any(p is plugin for p in implementers):
                    continue
                others = [p for _, p in self._loaded if p is not plugin]
                call = self._pm.subset_hook_caller(hook_name, remove_plugins=others)
                with registry._registering_for(info.name):
                    try:
                        call(registry=registry)
                    except PluginError:
                        raise
                    except Exception as exc:
                        raise PluginLoadError(
                            f"plugin {info.label} failed in {hook_name}: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
            registry._seal()
        return registries

    def _require_loaded(self) -> None:
        if self._registries is None:
            raise PluginError("plugins are not loaded yet: call PluginManager.load() first")
