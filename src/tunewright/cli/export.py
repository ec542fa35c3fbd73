"""``tunewright export``: a registered model version as files other tools load.

The version (an id, or ``model:alias`` such as ``support-bot:production``) is read from the
registry over gRPC; its trained folders, root ancestor first, come from the artifact store the
CLI's settings name (the services' store: ``artifacts.backend``, ``<data_dir>/artifacts``);
the base model is the base-model plugin's object. The model work is the tunewright-trl
plugin's (:mod:`tunewright_trl.export`):

- ``merged``: the chain merged into one safetensors checkpoint with the version's tokenizer,
  for ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` (or any server that loads a
  Hugging Face folder);
- ``adapter``: one PEFT LoRA adapter for the chain's base model (vLLM ``--lora-modules``,
  ``PeftModel.from_pretrained``); several LoRA links are combined exactly into one.

Both write ``tunewright-export.json`` (the version, its base model, the chain, what was done).
The export is written beside DIR and moved into place when complete, so a failed export
leaves DIR as it was; a non-empty DIR is refused unless ``force``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

from tunewright.cli.pipelines import RegistryClient
from tunewright.cli.stack import Stack, StackSettings, mask_url
from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactStore
from tunewright.core.bus import EventBus
from tunewright.core.model_versions import LookupById, TrainedChain, fetch_chain
from tunewright.core.plugins import PluginManager, Registries
from tunewright.registry.v1 import registry_pb2

Format = Literal["merged", "adapter"]
MANIFEST: Final = "tunewright-export.json"


class ExportError(RuntimeError):
    """An export that cannot be done as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: dict[str, Any]


def parse_model_ref(text: str) -> common_pb2.ModelVersionRef:
    """``mv_…`` (a model version id) or ``model:alias``."""
    model, sep, alias = text.partition(":")
    if not sep:
        if not text:
            raise ExportError("give a model version id or model:alias")
        return common_pb2.ModelVersionRef(id=text)
    if not model or not alias:
        raise ExportError(f"{text!r}: expected model:alias, e.g. support-bot:production")
    return common_pb2.ModelVersionRef(model=model, alias=alias)


def check_destination(out: Path, *, force: bool, keep: Sequence[Path] = ()) -> None:
    """Refuse a file, a non-empty folder (unless ``force``), or one that holds a ``keep``
    folder (the CLI's state and artifact store)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(f"{out} is not empty; --force replaces its contents")
        for folder in keep:
            if folder.resolve().is_relative_to(out.resolve()):
                raise ExportError(f"{out} holds {folder}; it is not replaced even with --force")


class ModelVersions(RegistryClient):
    """The CLI's registry client (address, TLS, token, workspace), reading model versions."""

    def model_version(self, ref: common_pb2.ModelVersionRef) -> registry_pb2.ModelVersion:
        reply = self._call(
            self._stub.GetModelVersion,
            registry_pb2.GetModelVersionRequest(ref=ref, workspace=self.workspace),
        )
        assert isinstance(reply, registry_pb2.GetModelVersionResponse)
        return reply.model_version


def export(
    settings: StackSettings,
    model_ref: str,
    *,
    fmt: Format,
    out: Path,
    force: bool = False,
    registry: str | None = None,
) -> ExportResult:
    """Export the model version ``model_ref`` as ``fmt`` into ``out``."""
    check_destination(out, force=force, keep=(settings.data_dir, settings.artifacts_root))
    ref = parse_model_ref(model_ref)
    exporter = _exporter()
    registries = PluginManager().load(disabled=settings.plugins.disabled)
    client = ModelVersions(settings, registry)
    try:
        version = client.model_version(ref)
        versions = {version.id: version}

        async def by_id(model_version_id: str) -> registry_pb2.ModelVersion:
            if model_version_id not in versions:
                versions[model_version_id] = client.model_version(
                    common_pb2.ModelVersionRef(id=model_version_id)
                )
            return versions[model_version_id]

        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
        try:
            chain = asyncio.run(_fetch(settings, registries, version, by_id, staging / "chain"))
            target = staging / "export"
            if fmt == "merged":
                done = exporter.export_merged(
                    **chain.generator_inputs(registries.base_models), out=target
                )
            else:  # an adapter is applied to the base by whoever serves it: no base needed
                done = exporter.export_adapter(
                    weights=list(chain.folders), tokenizer=chain.tokenizer, out=target
                )
            manifest = _manifest(fmt, model_ref, version, chain, versions, done)
            (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _replace(out, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        client.close()
    return ExportResult(out, manifest)


def _exporter() -> ModuleType:
    try:
        from tunewright_trl import export as exporter
    except ImportError as exc:
        raise ExportError(
            f"export needs the tunewright-trl plugin (torch, transformers, peft): {exc}"
        ) from None
    return exporter


async def _fetch(
    settings: StackSettings,
    registries: Registries,
    version: registry_pb2.ModelVersion,
    lookup: LookupById,
    into: Path,
) -> TrainedChain:
    backend = settings.artifacts.backend
    factory = registries.artifact_stores.get(backend).factory
    bus: EventBus | None = None
    try:
        try:
            store = factory(root=settings.artifacts_root, js=None)
        except ValueError:  # a store that says it needs NATS (``nats``): the stack's NATS
            nats_url = Stack(settings, say=lambda _: None).nats_url()
            try:
                bus = await EventBus.from_settings(
                    settings.nats.model_copy(update={"url": nats_url}),
                    name="tunewright-cli-export",
                    wait_for_server_s=2.0,
                )
            except Exception as exc:  # any connect failure: say where, never the credentials
                raise ExportError(
                    f"the {backend!r} artifact store needs NATS, and {mask_url(nats_url)} is "
                    f"unreachable ({type(exc).__name__}); --nats-url or `tunewright up`"
                ) from None
            store = factory(root=settings.artifacts_root, js=bus.js)
        if not isinstance(store, ArtifactStore):
            raise ExportError(
                f"artifact store plugin {backend!r} returned {type(store).__name__}, "
                "not an ArtifactStore"
            )
        return await fetch_chain(version, lookup, store, into)
    finally:
        if bus is not None:
            await bus.close()


def _manifest(
    fmt: Format,
    requested: str,
    version: registry_pb2.ModelVersion,
    chain: TrainedChain,
    versions: dict[str, registry_pb2.ModelVersion],
    done: dict[str, Any],
) -> dict[str, Any]:
    ids = [version.id]
    while versions[ids[-1]].parent_model_version_id:
        ids.append(versions[ids[-1]].parent_model_version_id)
    ids.reverse()  # root first, like the chain's folders
    kinds = done.pop("links")
    applied = done.pop("applied", None) or [None] * len(ids)
    links = []
    for link_id, kind, how in zip(ids, kinds, applied, strict=True):
        link = versions[link_id]
        entry = {"model_version_id": link_id, "model": link.model, "version": link.version}
        entry |= {"method": link.method, "weights": kind}
        if how is not None:
            entry["applied"] = how
        links.append(entry)
    return {
        "format": fmt,
        "model_version_id": version.id,
        "model": version.model,
        "version": version.version,
        "aliases": list(version.aliases),
        "requested": requested,
        "base_model": chain.base_model,
        "seed": chain.seed,
        "chain": ids,
        "links": links,
        "tokenizer_from": version.id,
        fmt: done,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _replace(out: Path, target: Path) -> None:
    if out.is_dir():
        if any(out.iterdir()):
            shutil.rmtree(out)  # check_destination allowed it (--force)
        else:
            out.rmdir()
    target.rename(out)
