"""The registry service process: ``tunewright-registry`` or ``python -m tunewright.registry.server``.

Owns datasets, runs, models, evaluations, lineage, promotion and pipeline runs. One database
(migrated at start), one writer of facts (``registry-facts``), the pipeline worker
(``pipeline-worker``), the outbox publisher loop and the stage-deadline loop.

A handler that cannot reach the database raises ``Unavailable`` (see :mod:`.db`): its consumer
retries without a delivery limit (catalog), so a fact waits out a database outage of any
length and is applied once when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tunewright.core import subjects
from tunewright.core.bus import Delivery
from tunewright.core.errors import InvalidArgument, Unavailable
from tunewright.core.service import Consumer, GrpcBinding, ServiceContext, ServiceDefinition
from tunewright.core.service import main as run_service_main
from tunewright.events.v1 import events_pb2
from tunewright.registry import facts, pipelines
from tunewright.registry.db import Database, migrate
from tunewright.registry.outbox import OutboxPublisher
from tunewright.registry.servicer import RegistryServicer
from tunewright.registry.settings import RegistrySettings
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
log = logging.getLogger(__name__)


@dataclass
class Registry:
    """What the registry's servicer, consumers and loops share."""

    db: Database
    outbox: OutboxPublisher
    #: a running stage's deadline when its spec sets none (RegistrySection.stage_deadline_s)
    stage_deadline_s: float = 48 * 3600.0
    deadline_check_s: float = 30.0

    def _applied(self) -> None:
        self.outbox.wake.set()

    def expire_overdue_stages(self, now: datetime | None = None) -> list[str]:
        """Fail the pipeline runs whose running stage is past its deadline (their ids)."""
        with self.db.transaction() as session:
            runs = pipelines.expire_overdue_stages(
                session, now=now or datetime.now(UTC), default_deadline_s=self.stage_deadline_s
            )
            return [run.id for run in runs]

    async def deadlines(self) -> None:
        """Check stage deadlines forever (until cancelled)."""
        while True:
            await asyncio.sleep(self.deadline_check_s)
            try:
                expired = await asyncio.to_thread(self.expire_overdue_stages)
            except Unavailable as exc:  # the next round tries again
                log.warning("stage deadlines not checked: %s", exc.message)
                continue
            if expired:
                log.warning("pipeline runs failed by a stage deadline run_ids=%s", expired)
                self._applied()

    async def on_fact(self, delivery: Delivery) -> None:
        message = delivery.decode()

        def work() -> bool:
            with self.db.transaction() as session:
                return facts.apply_fact(
                    session, message, durable=delivery.durable, msg_id=delivery.msg_id
                )

        if await asyncio.to_thread(work):
            self._applied()

    async def on_dead_letter(self, delivery: Delivery) -> None:
        if not delivery.headers.get(subjects.HEADER_DLQ_ORIGINAL_SUBJECT, "").endswith(
            ".requested"
        ):
            return  # only requests belong to pipeline stages
        request = delivery.decode()
        reason = delivery.headers.get(subjects.HEADER_DLQ_REASON, "")

        def work() -> bool:
            with self.db.transaction() as session:
                return facts.apply_dead_letter(
                    session,
                    request,
                    reason=reason,
                    durable=delivery.durable,
                    msg_id=delivery.msg_id,
                )

        if await asyncio.to_thread(work):
            self._applied()

    async def on_pipeline_requested(self, delivery: Delivery) -> None:
        request = delivery.decode(events_pb2.PipelineRunRequested)

        def work() -> bool:
            with self.db.transaction() as session:
                if facts.already_processed(session, delivery.durable, delivery.msg_id):
                    return False
                workspace = request.meta.workspace or delivery.workspace or ""
                try:
                    run, _ = pipelines.create_run(
                        session,
                        run_id=request.run_id or delivery.msg_id,
                        spec_yaml=request.spec_yaml,
                        parameters=dict(request.parameters),
                        requested_by=request.requested_by or "nats",
                        trigger_event_id=request.trigger_event_id,
                        workspace=workspace,
                    )
                    pipelines.advance(session, run)
                except InvalidArgument as exc:
                    # a request from another system cannot be answered: record it as failed
                    pipelines.reject_run(
                        session,
                        run_id=request.run_id or delivery.msg_id,
                        spec_yaml=request.spec_yaml,
                        error=exc,
                        workspace=workspace,
                        requested_by=request.requested_by or "nats",
                        trigger_event_id=request.trigger_event_id,
                    )
                facts.mark_processed(session, delivery.durable, delivery.msg_id)
                return True

        if await asyncio.to_thread(work):
            self._applied()


def registry(context: ServiceContext[RegistrySettings]) -> Registry:
    existing = context.resources.get("registry")
    if isinstance(existing, Registry):
        return existing
    section = context.settings.registry
    db = Database(
        context.settings.database_url(),
        connect_timeout_s=section.db_connect_timeout_s,
        statement_timeout_s=section.db_statement_timeout_s,
    )
    migrate(db.engine)
    outbox = OutboxPublisher(db, context.bus.publish, poll_s=section.outbox_poll_s)
    app = Registry(
        db=db,
        outbox=outbox,
        stage_deadline_s=section.stage_deadline_s,
        deadline_check_s=section.deadline_check_s,
    )
    context.resources["registry"] = app
    context.closers.append(db.dispose)
    return app


def grpc_bindings(context: ServiceContext[RegistrySettings]) -> list[GrpcBinding]:
    app = registry(context)
    servicer = RegistryServicer(app.db, on_commit=app.outbox.wake.set)
    return [
        GrpcBinding(registry_pb2_grpc.add_RegistryServiceServicer_to_server, servicer, SERVICE_NAME)
    ]


def consumers(context: ServiceContext[RegistrySettings]) -> list[Consumer]:
    app = registry(context)
    return [
        # one writer: facts are applied in order, each in one transaction
        Consumer("registry-facts", app.on_fact),
        Consumer("pipeline-worker", app.on_pipeline_requested),
        Consumer("registry-dead-letters", app.on_dead_letter),
    ]


def background(context: ServiceContext[RegistrySettings]) -> list[Callable[[], Awaitable[None]]]:
    app = registry(context)
    return [app.outbox.run, app.deadlines]


DEFINITION = ServiceDefinition(
    name="registry",
    settings_cls=RegistrySettings,
    grpc=grpc_bindings,
    consumers=consumers,
    background=background,
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
