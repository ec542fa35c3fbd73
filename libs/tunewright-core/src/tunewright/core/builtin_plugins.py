"""The core's built-in capabilities, registered as a plugin like any other.

Published on the ``tunewright`` entry-point group as ``core-artifact-stores`` (see
libs/tunewright-core/pyproject.toml), so it is loaded, listed and disabled exactly like a
third-party plugin. The stores are imported inside their factories: loading the plugin costs
nothing, and the NATS client is only imported by a service that uses the NATS store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunewright.core.plugins import ArtifactStoreRegistry, hookimpl

if TYPE_CHECKING:
    from tunewright.core.artifacts import ArtifactStore


# Both are called the same way, ``factory(root=settings.artifacts_root, js=jetstream)``; each
# store takes what it needs and says which argument is missing.
def _local_store(**options: Any) -> ArtifactStore:
    from tunewright.core.artifacts import LocalArtifactStore

    return LocalArtifactStore.from_settings(**options)


def _nats_store(**options: Any) -> ArtifactStore:
    from tunewright.core.artifacts import NatsObjectArtifactStore

    return NatsObjectArtifactStore.from_settings(**options)


@hookimpl
def tw_register_artifact_stores(registry: ArtifactStoreRegistry) -> None:
    registry.add(
        name="local",
        factory=_local_store,
        description="Content-addressed store in a local directory (the default).",
    )
    registry.add(
        name="nats",
        factory=_nats_store,
        description="Content-addressed store in a NATS JetStream object store bucket "
        "(multi-host without extra infrastructure).",
    )
