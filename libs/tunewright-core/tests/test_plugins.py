"""The plugin system, end to end through real entry points.

Throwaway plugin distributions are real: a ``<name>-0.1.dist-info`` folder with METADATA and
entry_points.txt next to the plugin module, put on ``sys.path`` so that
``importlib.metadata`` finds them exactly as it finds an installed wheel. The example plugin
in tests/fixtures/tunewright-plugin-example is installed in the venv (editable).
"""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tunewright.core import hookspecs
from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import (
    DISABLED_ENV_VAR,
    MetricRegistry,
    PluginError,
    PluginLoadError,
    PluginManager,
    RegistrationError,
    Registries,
    TrainingMethodRegistry,
    UnknownCapabilityError,
    disabled_from_env,
    hookimpl,
)

InstallDist = Callable[[str, dict[str, str], dict[str, str]], None]


@pytest.fixture
def install_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InstallDist]:
    """Return ``install(dist, entry_points, modules)`` that puts a distribution on sys.path."""
    modules_created: list[str] = []

    def install(dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
        root = tmp_path / dist
        info = root / f"{dist}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[tunewright]\n{lines}")
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            modules_created.append(module)
        monkeypatch.syspath_prepend(str(root))

    yield install
    for module in modules_created:
        sys.modules.pop(module, None)


BROKEN_MODULE = """
raise RuntimeError("this plugin cannot start: missing credentials file")
"""


def _metric_plugin(metric: str) -> str:
    return f"""
    from tunewright.core.plugins import hookimpl

    @hookimpl
    def tw_register_metrics(registry):
        registry.add(name={metric!r}, factory=lambda: None, higher_is_better=True)
    """


# --- discovery ------------------------------------------------------------------------------


def test_installed_example_plugin_is_discovered_through_its_entry_point() -> None:
    pm = PluginManager()
    registries = pm.load()

    info = next(p for p in pm.plugins if p.name == "example")
    assert (info.distribution, info.module) == (
        "tunewright-plugin-example",
        "tunewright_plugin_example",
    )
    spec = registries.metrics.get("example.distinct_2")
    assert spec.plugin == "example"
    assert spec.higher_is_better is True
    distinct_2 = spec.factory()
    assert callable(distinct_2)
    # bigrams (a b) (b a) (a b): 2 distinct of 3
    assert distinct_2(["a b a b"], []) == pytest.approx(2 / 3)


def test_builtins_are_a_plugin_loaded_through_the_core_entry_point() -> None:
    pm = PluginManager()
    registries = pm.load()

    core = next(p for p in pm.plugins if p.name == "core-artifact-stores")
    assert core.distribution == "tunewright-core"
    assert registries.artifact_stores.names() == ("local", "nats")
    assert {s.plugin for s in registries.artifact_stores} == {"core-artifact-stores"}


def test_builtin_local_store_factory_builds_the_store(tmp_path: Path) -> None:
    from tunewright.core.artifacts import LocalArtifactStore

    spec = PluginManager().load().artifact_stores.get("local")
    store = spec.factory(root=tmp_path, js=None)

    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path


def test_importing_plugins_does_not_import_heavy_modules() -> None:
    # a fresh interpreter: the factories, not the plugin modules, import store backends
    code = (
        "import sys\n"
        "from tunewright.core.plugins import PluginManager\n"
        "PluginManager().load()\n"
        "heavy = [m for m in ('nats', 'tunewright.core.artifacts') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# --- start-up failures ----------------------------------------------------------------------


def test_plugin_that_fails_to_import_stops_start_up_naming_it(install_dist: InstallDist) -> None:
    install_dist("broken_plugin", {"broken": "tw_test_broken"}, {"tw_test_broken": BROKEN_MODULE})

    with pytest.raises(PluginLoadError) as excinfo:
        PluginManager().load()

    message = str(excinfo.value)
    assert "'broken'" in message  # the entry-point name, which the disable list uses
    assert "broken_plugin 0.1" in message  # the distribution
    assert "RuntimeError: this plugin cannot start" in message
    assert isinstance(excinfo.value.__cause__, RuntimeError)


def test_disable_list_skips_a_broken_plugin_before_importing_it(
    install_dist: InstallDist,
) -> None:
    install_dist("broken_plugin", {"broken": "tw_test_broken"}, {"tw_test_broken": BROKEN_MODULE})

    pm = PluginManager()
    registries = pm.load(disabled=["broken", "not-installed-here"])

    assert "broken" not in {p.name for p in pm.plugins}
    assert "tw_test_broken" not in sys.modules
    assert "example.distinct_2" in registries.metrics


def test_env_var_disables_plugins(
    install_dist: InstallDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist("broken_plugin", {"broken": "tw_test_broken"}, {"tw_test_broken": BROKEN_MODULE})
    monkeypatch.setenv(DISABLED_ENV_VAR, " example , broken,")

    pm = PluginManager()
    registries = pm.load()

    loaded = {p.name for p in pm.plugins}
    assert "core-artifact-stores" in loaded  # first-party plugins installed alongside may load too
    assert not loaded & {"example", "broken"}
    assert "example.distinct_2" not in registries.metrics
    assert disabled_from_env({DISABLED_ENV_VAR: "a,,b "}) == {"a", "b"}


def test_impl_of_unknown_hook_fails_loudly(install_dist: InstallDist) -> None:
    typo = """
    from tunewright.core.plugins import hookimpl

    @hookimpl
    def tw_register_metric(registry):  # missing "s"
        pass
    """
    install_dist("typo_plugin", {"typo": "tw_test_typo"}, {"tw_test_typo": typo})

    with pytest.raises(PluginLoadError) as excinfo:
        PluginManager().load()

    message = str(excinfo.value)
    assert "'typo' (distribution typo_plugin 0.1) implements 'tw_register_metric'" in message
    assert "tw_register_metrics" in message  # the known hooks are listed


def test_impl_with_an_argument_the_spec_lacks_is_rejected(install_dist: InstallDist) -> None:
    bad = """
    from tunewright.core.plugins import hookimpl

    @hookimpl
    def tw_register_metrics(registry, config):
        pass
    """
    install_dist("bad_args", {"bad-args": "tw_test_bad_args"}, {"tw_test_bad_args": bad})

    with pytest.raises(PluginLoadError, match=r"'bad-args' \(distribution bad_args 0.1\)"):
        PluginManager().load()


def test_duplicate_name_error_names_both_plugins(install_dist: InstallDist) -> None:
    install_dist("first_dist", {"first": "tw_test_first"}, {"tw_test_first": _metric_plugin("dup")})
    install_dist(
        "second_dist", {"second": "tw_test_second"}, {"tw_test_second": _metric_plugin("dup")}
    )

    with pytest.raises(RegistrationError) as excinfo:
        PluginManager().load()

    assert str(excinfo.value).startswith(
        "metric 'dup' from plugin 'second' is already registered by plugin 'first'"
    )


def test_exception_inside_a_register_hook_names_plugin_and_hook(
    install_dist: InstallDist,
) -> None:
    failing = """
    from tunewright.core.plugins import hookimpl

    @hookimpl
    def tw_register_trackers(registry):
        raise ImportError("mlflow is not installed")
    """
    install_dist("failing_dist", {"failing": "tw_test_failing"}, {"tw_test_failing": failing})

    with pytest.raises(PluginLoadError) as excinfo:
        PluginManager().load()

    assert "'failing' (distribution failing_dist 0.1) failed in tw_register_trackers" in str(
        excinfo.value
    )
    assert isinstance(excinfo.value.__cause__, ImportError)


# --- registries -----------------------------------------------------------------------------


def test_get_of_a_missing_name_lists_the_registered_ones() -> None:
    registry = MetricRegistry()
    registry.add(name="rouge", factory=dict, higher_is_better=True)
    registry.add(name="bleu", factory=dict, higher_is_better=True)

    with pytest.raises(
        UnknownCapabilityError, match=r"no metric named 'rogue'; registered: bleu, rouge"
    ):
        registry.get("rogue")
    # a request naming a capability that is not installed is a bad request
    assert issubclass(UnknownCapabilityError, InvalidArgument)
    assert registry.names() == ("bleu", "rouge")
    assert [s.name for s in registry] == ["bleu", "rouge"]
    assert len(registry) == 2 and "rouge" in registry
    assert registry.get("rouge").plugin == "(registered directly)"


@pytest.mark.parametrize("name", ["Rouge", "1gram", "", "has space", "_private", "a/b", "rouge\n"])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(RegistrationError, match="must match"):
        MetricRegistry().add(name=name, factory=dict, higher_is_better=True)


def test_capability_fields_are_validated() -> None:
    @dataclasses.dataclass
    class SftConfig:
        learning_rate: float = 2e-4

    methods = TrainingMethodRegistry()
    spec = methods.add(name="sft", factory=dict, config_cls=SftConfig, dataset_kinds=["sft", "sft"])
    assert spec.dataset_kinds == frozenset({"sft"})

    with pytest.raises(RegistrationError, match="config_cls must be a dataclass type"):
        methods.add(name="dpo", factory=dict, config_cls=dict, dataset_kinds=["preference"])
    with pytest.raises(RegistrationError, match="not the string 'preference'"):
        methods.add(name="dpo", factory=dict, config_cls=SftConfig, dataset_kinds="preference")
    with pytest.raises(RegistrationError, match="non-empty"):
        methods.add(name="dpo", factory=dict, config_cls=SftConfig, dataset_kinds=[])
    with pytest.raises(RegistrationError, match="factory must be callable"):
        not_callable: Any = "trl.DPOTrainer"
        methods.add(name="dpo", factory=not_callable, config_cls=SftConfig, dataset_kinds=["sft"])
    with pytest.raises(RegistrationError, match="higher_is_better must be a bool"):
        MetricRegistry().add(name="loss", factory=dict, higher_is_better="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MetricRegistry().add("loss", dict, "", True)  # type: ignore[call-arg]


def test_registries_are_sealed_after_load() -> None:
    registries = PluginManager().load()

    with pytest.raises(RegistrationError, match="built once at start-up"):
        registries.metrics.add(name="late", factory=dict, higher_is_better=True)


def test_every_registry_is_filled_by_its_own_typed_hook() -> None:
    specs = {name for name in vars(hookspecs) if name.startswith("tw_register_")}
    fields = {f"tw_register_{name}" for name, _ in Registries().items()}
    assert specs == fields
    for name, registry in Registries().items():
        hook = getattr(hookspecs, f"tw_register_{name}")
        # annotations are strings (from __future__ import annotations): compare by name
        assert inspect.signature(hook).parameters["registry"].annotation == type(registry).__name__


# --- lifecycle hooks --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Job:
    id: str = "job-1"
    method: str = "sft"
    base_model: str = "tiny:llama-xs"


@dataclasses.dataclass(frozen=True)
class _Run:
    id: str = "run-1"
    model: str = "job-1"


def _recording_plugin(calls: list[tuple[str, dict[str, object]]]) -> types.ModuleType:
    plugin = types.ModuleType("tw_test_recorder")

    @hookimpl
    def tw_service_started(service: str, settings: Mapping[str, object]) -> None:
        calls.append(("service_started", {"service": service, "settings": settings}))

    @hookimpl
    def tw_before_train(job: hookspecs.TrainJobView) -> None:
        calls.append(("before_train", {"job": job}))

    # an impl may take a subset of the spec's arguments
    @hookimpl
    def tw_after_train(result: Mapping[str, object]) -> None:
        calls.append(("after_train", {"result": result}))

    @hookimpl
    def tw_after_evaluate(run: hookspecs.EvalRunView, result: Mapping[str, object]) -> None:
        calls.append(("after_evaluate", {"run": run, "result": result}))

    for fn in (tw_service_started, tw_before_train, tw_after_train, tw_after_evaluate):
        setattr(plugin, fn.__name__, fn)
    return plugin


def test_lifecycle_hooks_reach_plugins_with_keyword_arguments() -> None:
    calls: list[tuple[str, dict[str, object]]] = []
    pm = PluginManager()
    pm.load(builtins=[_recording_plugin(calls)])
    assert pm.plugins[0].name == "tw_test_recorder"
    job, run = _Job(), _Run()

    pm.service_started(service="trainer", settings={"log_level": "info"})
    pm.before_train(job=job)
    pm.after_train(job=job, result={"train_loss": 0.5})
    pm.after_evaluate(run=run, result={"passed": True})

    assert calls == [
        ("service_started", {"service": "trainer", "settings": {"log_level": "info"}}),
        ("before_train", {"job": job}),
        ("after_train", {"result": {"train_loss": 0.5}}),
        ("after_evaluate", {"run": run, "result": {"passed": True}}),
    ]


def test_hook_methods_take_keyword_arguments_only() -> None:
    pm = PluginManager()
    pm.load()
    with pytest.raises(TypeError):
        pm.before_train(_Job())  # type: ignore[call-arg]
    methods = ["load", "service_started", "before_train", "after_train", "after_evaluate"]
    for method in methods:
        params = list(inspect.signature(getattr(pm, method)).parameters.values())
        assert params and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), method


def test_manager_must_be_loaded_once_before_use() -> None:
    pm = PluginManager()
    with pytest.raises(PluginError, match="not loaded"):
        pm.before_train(job=_Job())
    with pytest.raises(PluginError, match="not loaded"):
        _ = pm.registries
    pm.load()
    with pytest.raises(PluginError, match="runs once"):
        pm.load()
