"""Model names -> the trained chains a backend serves, and the aliases that follow promotions.

A request names a model as the registry does: ``model:alias`` (``support-bot:production``),
a bare model name (its ``default_alias``, ``production`` unless configured) or a model version
id. An alias resolves through the registry and is remembered; a promotion or rollback fact
(``tw.registry.model.promoted``) re-points it, but only after the new version's weights are
downloaded and loaded by the backend, so no request waits for or fails on the switch. Aliases
in use are also re-read every ``refresh_s`` in case a fact was missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactStore
from tunewright.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tunewright.core.model_versions import TrainedChain, fetch_chain
from tunewright.registry.v1 import registry_pb2

log = logging.getLogger(__name__)

AliasKey = tuple[str, str, str]  # workspace, model, alias
MAX_NAME_CHARS = 256


class Registry(Protocol):
    async def model_version(
        self, ref: common_pb2.ModelVersionRef, workspace: str
    ) -> registry_pb2.ModelVersion: ...
    async def aliases(self, workspace: str) -> list[registry_pb2.AliasAssignment]: ...


@dataclass(frozen=True)
class Resolved:
    #: the name the request used (echoed back as ``model``)
    name: str
    version: registry_pb2.ModelVersion
    chain: TrainedChain


@dataclass
class _Alias:
    model_version_id: str
    checked_at: float


class ModelResolver:
    def __init__(
        self,
        *,
        registry: Registry,
        artifacts: ArtifactStore,
        cache_dir: Path,
        prepare: Callable[[TrainedChain], Awaitable[None]],
        default_alias: str = "production",
        refresh_s: float = 30.0,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.cache_dir = cache_dir
        self.prepare = prepare
        self.default_alias = default_alias
        self.refresh_s = refresh_s
        self._aliases: dict[AliasKey, _Alias] = {}
        self._versions: dict[str, registry_pb2.ModelVersion] = {}
        self._chains: dict[str, TrainedChain] = {}
        self._fetching: dict[str, asyncio.Lock] = {}

    # --- names ------------------------------------------------------------------------------

    def parse(self, name: str) -> common_pb2.ModelVersionRef:
        name = name.strip()
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(
                f"model must be 1-{MAX_NAME_CHARS} characters: a model version id, "
                "'model:alias' or a model name"
            )
        if ":" in name:
            model, _, alias = name.partition(":")
            if not model or not alias:
                raise InvalidArgument(f"model {name!r} is not 'model:alias'")
            return common_pb2.ModelVersionRef(model=model, alias=alias)
        return common_pb2.ModelVersionRef(id=name)

    async def resolve(self, name: str, workspace: str) -> Resolved:
        ref = self.parse(name)
        if ref.id:
            try:
                version = await self._version_by_id(ref.id, workspace)
            except NotFound:
                # not an id: a bare model name means its default alias
                ref = common_pb2.ModelVersionRef(model=ref.id, alias=self.default_alias)
            else:
                return Resolved(name, version, await self.chain(version))
        key = (workspace, ref.model, ref.alias)
        known = self._aliases.get(key)
        if known is None or time.monotonic() - known.checked_at > self.refresh_s:
            try:
                version = await self.registry.model_version(ref, workspace)
            except NotFound:
                self._aliases.pop(key, None)
                raise NotFound(
                    f"the model {name!r} does not exist (no model version or alias of that "
                    f"name in workspace {workspace!r})",
                    reason="MODEL_NOT_FOUND",
                ) from None
            self._versions[version.id] = version
            if known is not None and known.model_version_id != version.id:
                log.info(
                    "alias moved (seen on refresh) alias=%s:%s model_version_id=%s",
                    ref.model,
                    ref.alias,
                    version.id,
                )
            self._aliases[key] = _Alias(version.id, time.monotonic())
        else:
            version = await self._version_by_id(known.model_version_id, workspace)
        return Resolved(name, version, await self.chain(version))

    async def _version_by_id(
        self, model_version_id: str, workspace: str
    ) -> registry_pb2.ModelVersion:
        version = self._versions.get(model_version_id)
        if version is None:
            version = await self.registry.model_version(
                common_pb2.ModelVersionRef(id=model_version_id), workspace
            )
            self._versions[version.id] = version
        if (version.workspace or "default") != (workspace or "default"):
            raise NotFound(
                f"the model {model_version_id!r} does not exist", reason="MODEL_NOT_FOUND"
            )
        return version

    async def chain(self, version: registry_pb2.ModelVersion) -> TrainedChain:
        chain = self._chains.get(version.id)
        if chain is not None:
            return chain
        lock = self._fetching.setdefault(version.id, asyncio.Lock())
        async with lock:
            chain = self._chains.get(version.id)
            if chain is None:

                async def lookup(model_version_id: str) -> registry_pb2.ModelVersion:
                    return await self._version_by_id(model_version_id, version.workspace)

                chain = await fetch_chain(version, lookup, self.artifacts, self.cache_dir)
                self._chains[version.id] = chain
        return chain

    def aliases_in_use(self) -> dict[AliasKey, str]:
        return {key: a.model_version_id for key, a in self._aliases.items()}

    # --- promotions -------------------------------------------------------------------------

    async def on_assignment(self, assignment: registry_pb2.AliasAssignment) -> bool:
        """An alias was (re)assigned (promotion or rollback). An alias this server answers
        for switches once the new version is loaded; returns whether it switched."""
        key = (assignment.workspace or "default", assignment.model, assignment.alias)
        known = self._aliases.get(key)
        if known is None:
            return False  # not served here yet: the first request resolves it
        if known.model_version_id == assignment.model_version_id:
            known.checked_at = time.monotonic()
            return False
        version = await self._version_by_id(assignment.model_version_id, key[0])
        chain = await self.chain(version)
        try:
            await self.prepare(chain)
        except FailedPrecondition as exc:
            # keep serving the old version: a broken new one must not take the alias down
            log.error(
                "promoted model version cannot be served; alias keeps its old version "
                "alias=%s:%s model_version_id=%s reason=%s",
                assignment.model,
                assignment.alias,
                version.id,
                exc.reason,
            )
            return False
        self._aliases[key] = _Alias(version.id, time.monotonic())
        log.info(
            "alias switched alias=%s:%s model_version_id=%s previous=%s",
            assignment.model,
            assignment.alias,
            version.id,
            known.model_version_id,
        )
        return True

    async def refresh(self) -> None:
        """Re-read every alias in use (a missed fact heals within ``refresh_s``)."""
        for (workspace, model, alias), known in list(self._aliases.items()):
            try:
                version = await self.registry.model_version(
                    common_pb2.ModelVersionRef(model=model, alias=alias), workspace
                )
            except NotFound:
                self._aliases.pop((workspace, model, alias), None)
                continue
            if version.id != known.model_version_id:
                self._versions[version.id] = version
                await self.on_assignment(
                    registry_pb2.AliasAssignment(
                        workspace=workspace, model=model, alias=alias, model_version_id=version.id
                    )
                )
            else:
                known.checked_at = time.monotonic()
