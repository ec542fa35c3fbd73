"""The synth service process: ``tunewright-synth`` or ``python -m tunewright.synth.server``.

Owns synthetic examples, preference candidates and human feedback. What works in this
release is the preference path, driven by events (a pipeline's ``candidates`` and ``feedback``
stages, or any system): ``tw.synth.candidates.requested`` samples responses from a model
version and publishes them to a feedback backend (``tw.synth.candidates.published``), and
``tw.feedback.collection.requested`` turns the backend's rankings into a preference dataset
version (``tw.feedback.dataset.collected``). Synthetic-example requests are dead-lettered with
reason UNIMPLEMENTED, and the gRPC API still answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import sys

from tunewright.core import subjects
from tunewright.core.bus import Delivery, event_meta
from tunewright.core.errors import TunewrightError
from tunewright.core.registry_client import RegistryClient
from tunewright.core.service import (
    Consumer,
    GrpcBinding,
    NotImplementedYet,
    ServiceContext,
    ServiceDefinition,
)
from tunewright.core.service import main as run_service_main
from tunewright.events.v1 import events_pb2
from tunewright.synth.preferences import Preferences
from tunewright.synth.settings import SynthSettings
from tunewright.synth.v1 import synth_pb2, synth_pb2_grpc

SERVICE_NAME = synth_pb2.DESCRIPTOR.services_by_name["SynthService"].full_name
PRODUCER = "synth"
log = logging.getLogger(__name__)


class Synth:
    def __init__(self, context: ServiceContext[SynthSettings]) -> None:
        self.context = context
        workdir = context.settings.data_dir / "synth"
        workdir.mkdir(parents=True, exist_ok=True)
        self.preferences = Preferences(
            registry=RegistryClient(context.settings.synth.registry_address),
            artifacts=context.artifacts,
            plugins=context.plugins.registries,
            workdir=workdir,
        )

    async def _failed(self, job_id: str, workspace: str, exc: TunewrightError) -> None:
        fact = events_pb2.SynthJobFailed(
            meta=event_meta(producer=PRODUCER, workspace=workspace), job_id=job_id
        )
        fact.error.reason, fact.error.message = exc.reason, exc.message
        await self.context.bus.publish(subjects.SYNTH_JOB_FAILED, fact, key=job_id)

    async def on_request(self, delivery: Delivery) -> None:
        message = delivery.decode()
        job_id = getattr(message, "job_id", "") or delivery.msg_id
        spec = message.spec  # type: ignore[attr-defined]
        workspace = spec.workspace or delivery.workspace or "default"
        meta = event_meta(producer=PRODUCER, workspace=workspace)
        try:
            if isinstance(message, events_pb2.SynthCandidatesRequested):
                published = await self.preferences.candidates(job_id, spec)
                await self.context.bus.publish(
                    subjects.SYNTH_CANDIDATES_PUBLISHED,
                    events_pb2.SynthCandidatesPublished(
                        meta=meta,
                        job_id=job_id,
                        feedback_backend=published.backend,
                        feedback_dataset=published.dataset,
                        records=published.records,
                        review_url=published.review_url,
                    ),
                    key=job_id,
                )
            elif isinstance(message, events_pb2.FeedbackCollectionRequested):
                collected = await self.preferences.collect(job_id, spec)
                await self.context.bus.publish(
                    subjects.FEEDBACK_DATASET_COLLECTED,
                    events_pb2.FeedbackDatasetCollected(
                        meta=meta,
                        job_id=job_id,
                        dataset_version=collected.dataset_version,
                        pairs=collected.pairs,
                        annotators=collected.annotators,
                        agreement=collected.agreement,
                        simulated=collected.simulated,
                    ),
                    key=job_id,
                )
            else:
                raise NotImplementedYet(f"synth cannot handle {delivery.subject} yet")
        except NotImplementedYet:
            raise  # dead-lettered with its reason
        except TunewrightError as exc:
            log.warning("synth job failed job_id=%s reason=%s", job_id, exc.reason)
            await self._failed(job_id, workspace, exc)


def _synth(context: ServiceContext[SynthSettings]) -> Synth:
    existing = context.resources.get("synth")
    if isinstance(existing, Synth):
        return existing
    app = Synth(context)
    context.resources["synth"] = app
    return app


def grpc_bindings(context: ServiceContext[SynthSettings]) -> list[GrpcBinding]:
    # the generated base servicer answers UNIMPLEMENTED for every RPC (jobs come by event)
    servicer = synth_pb2_grpc.SynthServiceServicer()
    return [GrpcBinding(synth_pb2_grpc.add_SynthServiceServicer_to_server, servicer, SERVICE_NAME)]


def consumers(context: ServiceContext[SynthSettings]) -> list[Consumer]:
    return [Consumer("synth-worker", _synth(context).on_request)]


DEFINITION = ServiceDefinition(
    name="synth", settings_cls=SynthSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
