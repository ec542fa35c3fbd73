"""A registered model version as the folders a generator rebuilds it from.

A model version trained on a parent (DPO on the SFT model) is only meaningful on top of that
parent: :func:`fetch_chain` walks ``parent_model_version_id`` to the root, downloads every
version's trained folder (the trainer's output: ``model/``, ``tokenizer/``, ``config.json``)
from the artifact store, and says which base model and seed the root was trained from. The
``local`` generator plugin turns that into a model; the evaluator and the synth service use it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewright.core.artifacts import ArtifactRef, ArtifactStore
from tunewright.core.errors import FailedPrecondition
from tunewright.core.plugins import BaseModelRegistry
from tunewright.registry.v1 import registry_pb2

#: model version id -> the registered model version
LookupById = Callable[[str], Awaitable[registry_pb2.ModelVersion]]


@dataclass(frozen=True)
class TrainedChain:
    model_version_id: str
    #: the root ancestor's base model (``tiny:llama-xs``, ``hf:/models/x``)
    base_model: str
    #: the seed the root's base weights were drawn with (``tiny:``); label ``seed``
    seed: int
    #: trained folders, root ancestor first, the version itself last
    folders: tuple[Path, ...]

    @property
    def tokenizer(self) -> Path:
        """The folder whose ``tokenizer/`` (chat template, EOS) the version uses."""
        return self.folders[-1]

    def generator_inputs(self, base_models: BaseModelRegistry) -> dict[str, Any]:
        """The model arguments of a generator's ``generate(...)``: ``base``, ``weights``,
        ``tokenizer``."""
        return {
            "base": base_model(base_models, self.base_model, self.seed),
            "weights": list(self.folders),
            "tokenizer": self.tokenizer,
        }


def base_model(base_models: BaseModelRegistry, uri: str, seed: int) -> Any:
    """The base-model plugin object for ``uri`` (``tiny:llama-xs``, ``hf:/models/x``), with the
    seed its weights were drawn with."""
    scheme, _, reference = uri.partition(":")
    if scheme not in base_models:
        raise FailedPrecondition(f"no base-model plugin for {uri!r}", reason="UNKNOWN_BASE_MODEL")
    return base_models.get(scheme).factory(reference, seed=seed)


async def fetch_chain(
    version: registry_pb2.ModelVersion, lookup: LookupById, artifacts: ArtifactStore, into: Path
) -> TrainedChain:
    chain = [version]
    while chain[-1].parent_model_version_id:
        parent_id = chain[-1].parent_model_version_id
        if any(v.id == parent_id for v in chain):
            raise FailedPrecondition(f"model version {version.id} has a parent cycle")
        chain.append(await lookup(parent_id))
    folders = []
    for link in reversed(chain):  # root first
        if not link.HasField("weights") or not link.weights.uri:
            raise FailedPrecondition(
                f"model version {link.id} has no trained weights", reason="MODEL_WITHOUT_WEIGHTS"
            )
        folder = into / link.id
        if not folder.exists():
            await artifacts.get_dir(ArtifactRef.from_uri(link.weights.uri), folder)
        folders.append(folder)
    root = chain[-1]
    try:
        seed = int(root.labels.get("seed", "0") or 0)
    except ValueError:
        seed = 0
    return TrainedChain(version.id, root.base_model, seed, tuple(folders))
