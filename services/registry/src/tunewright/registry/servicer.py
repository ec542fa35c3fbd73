"""RegistryService over gRPC: request -> domain call in one transaction -> response.

Database work runs in a worker thread (SQLAlchemy is synchronous); errors are domain errors,
mapped to status codes by the core's interceptor.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import event_meta
from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.core.identities import actor_of, require_role, require_service
from tunewright.core.ids import new_id, stable_id
from tunewright.events.v1 import events_pb2
from tunewright.registry import convert, lineage, models, pipelines, promotion, records
from tunewright.registry.db import Database
from tunewright.registry.outbox import enqueue
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

T = TypeVar("T")
WORKSPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
STREAM_POLL_S = 0.3


# roles that may submit and cancel work (viewers only read)
_WORKERS = ("submitter", "reviewer", "promoter")


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, db: Database, *, on_commit: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.on_commit = on_commit  # wakes the outbox publisher

    async def _tx(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.db.transaction() as session:
                return work(session)

        result = await asyncio.to_thread(run)
        self.on_commit()
        return result

    # --- workspaces ---

    async def CreateWorkspace(self, request: Any, context: Any) -> Any:
        if not WORKSPACE_RE.match(request.name):
            raise InvalidArgument(
                f"workspace name must match {WORKSPACE_RE.pattern}",
                field_violations=[FieldViolation("name", f"must match {WORKSPACE_RE.pattern}")],
            )

        def work(session: Session) -> registry_pb2.Workspace:
            row = records.ensure_workspace(session, request.name, request.description)
            return registry_pb2.Workspace(
                name=row.name,
                description=row.description,
                created_at=convert.timestamp(row.created_at),
            )

        return registry_pb2.CreateWorkspaceResponse(workspace=await self._tx(work))

    async def ListWorkspaces(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListWorkspacesResponse:
            rows, token = records.list_workspaces(session, request.page)
            return registry_pb2.ListWorkspacesResponse(
                workspaces=[
                    registry_pb2.Workspace(
                        name=r.name,
                        description=r.description,
                        created_at=convert.timestamp(r.created_at),
                    )
                    for r in rows
                ],
                page=common_pb2.PageResponse(next_page_token=token),
            )

        return await self._tx(work)

    # --- dataset versions ---

    async def RegisterDatasetVersion(self, request: Any, context: Any) -> Any:
        require_role(action="register a dataset version")

        def work(session: Session) -> registry_pb2.RegisterDatasetVersionResponse:
            row, created = records.register_dataset_version(session, request.dataset_version)
            return registry_pb2.RegisterDatasetVersionResponse(
                dataset_version=convert.dataset_version_pb(row), created=created
            )

        return await self._tx(work)

    async def GetDatasetVersion(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.GetDatasetVersionResponse:
            row = records.get_dataset_version(session, request.ref, request.workspace)
            return registry_pb2.GetDatasetVersionResponse(
                dataset_version=convert.dataset_version_pb(row)
            )

        return await self._tx(work)

    async def ListDatasetVersions(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListDatasetVersionsResponse:
            rows, token = records.list_dataset_versions(session, request)
            return registry_pb2.ListDatasetVersionsResponse(
                dataset_versions=[convert.dataset_version_pb(r) for r in rows],
                page=common_pb2.PageResponse(next_page_token=token),
            )

        return await self._tx(work)

    # --- training runs ---

    async def RegisterTrainingRun(self, request: Any, context: Any) -> Any:
        require_role(action="register a training run")

        def work(session: Session) -> registry_pb2.RegisterTrainingRunResponse:
            row = records.register_training_run(session, request.run)
            return registry_pb2.RegisterTrainingRunResponse(run=convert.training_run_pb(row))

        return await self._tx(work)

    async def GetTrainingRun(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.GetTrainingRunResponse:
            return registry_pb2.GetTrainingRunResponse(
                run=convert.training_run_pb(records.get_training_run(session, request.run_id))
            )

        return await self._tx(work)

    async def ListTrainingRuns(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListTrainingRunsResponse:
            rows, token = records.list_training_runs(session, request)
            return registry_pb2.ListTrainingRunsResponse(
                runs=[convert.training_run_pb(r) for r in rows],
                page=common_pb2.PageResponse(next_page_token=token),
            )

        return await self._tx(work)

    # --- model versions ---

    def _model_pb(self, session: Session, row: models.ModelVersion) -> registry_pb2.ModelVersion:
        return convert.model_version_pb(row, records.aliases_of(session, row.id))

    async def RegisterModelVersion(self, request: Any, context: Any) -> Any:
        require_role(action="register a model version")

        def work(session: Session) -> registry_pb2.RegisterModelVersionResponse:
            row, created = records.register_model_version(session, request.model_version)
            return registry_pb2.RegisterModelVersionResponse(
                model_version=self._model_pb(session, row), created=created
            )

        return await self._tx(work)

    async def GetModelVersion(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.GetModelVersionResponse:
            row = records.get_model_version(session, request.ref, request.workspace)
            return registry_pb2.GetModelVersionResponse(model_version=self._model_pb(session, row))

        return await self._tx(work)

    async def ListModelVersions(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListModelVersionsResponse:
            rows, token = records.list_model_versions(session, request)
            return registry_pb2.ListModelVersionsResponse(
                model_versions=[self._model_pb(session, r) for r in rows],
                page=common_pb2.PageResponse(next_page_token=token),
            )

        return await self._tx(work)

    # --- evaluations ---

    async def RegisterEvaluation(self, request: Any, context: Any) -> Any:
        # a verdict decides promotions: only the platform (its evaluator) may record one
        require_service("evaluator", action="register an evaluation")
        evaluation = request.evaluation
        run = evaluation.run
        if evaluation.id and not run.id:
            run.id = evaluation.id
        if evaluation.workspace and not run.workspace:
            run.workspace = evaluation.workspace
        if evaluation.candidate_model_version_id and not run.spec.candidate.model.id:
            run.spec.candidate.model.id = evaluation.candidate_model_version_id

        def work(session: Session) -> registry_pb2.RegisterEvaluationResponse:
            row, created = records.record_evaluation(session, run)
            return registry_pb2.RegisterEvaluationResponse(
                evaluation=convert.evaluation_pb(row), created=created
            )

        return await self._tx(work)

    async def GetEvaluation(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.GetEvaluationResponse:
            row = records.get_evaluation(session, request.evaluation_id)
            return registry_pb2.GetEvaluationResponse(evaluation=convert.evaluation_pb(row))

        return await self._tx(work)

    async def ListEvaluations(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListEvaluationsResponse:
            rows, token = records.list_evaluations(session, request)
            return registry_pb2.ListEvaluationsResponse(
                evaluations=[convert.evaluation_pb(r) for r in rows],
                page=common_pb2.PageResponse(next_page_token=token),
            )

        return await self._tx(work)

    # --- lineage, aliases, audit ---

    async def GetLineage(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.GetLineageResponse:
            root = records.get_model_version(session, request.model, request.workspace)
            graph = lineage.lineage(session, root)
            return registry_pb2.GetLineageResponse(
                root_id=graph.root_id, nodes=list(graph.nodes.values()), edges=graph.edges
            )

        return await self._tx(work)

    async def Promote(self, request: Any, context: Any) -> Any:
        if request.force:
            require_role(action="force a promotion")
        else:
            require_role("promoter", action="promote a model version")
        actor = actor_of(request.actor)

        def work(session: Session) -> registry_pb2.PromoteResponse:
            result = promotion.promote(
                session,
                workspace=request.workspace,
                model_version_id=request.model_version_id,
                alias=request.alias,
                force=request.force,
                reason=request.reason,
                actor=actor,
            )
            return registry_pb2.PromoteResponse(
                assignment=convert.alias_pb(result.alias),
                previous_model_version_id=result.previous_model_version_id,
                evaluation_id=result.evaluation_id,
            )

        return await self._tx(work)

    async def Rollback(self, request: Any, context: Any) -> Any:
        require_role("promoter", action="roll back an alias")
        actor = actor_of(request.actor)

        def work(session: Session) -> registry_pb2.RollbackResponse:
            alias, rolled_back = promotion.rollback(
                session,
                workspace=request.workspace,
                model=request.model,
                alias=request.alias,
                reason=request.reason,
                actor=actor,
            )
            return registry_pb2.RollbackResponse(
                assignment=convert.alias_pb(alias), rolled_back_model_version_id=rolled_back
            )

        return await self._tx(work)

    async def ListAliases(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListAliasesResponse:
            rows = promotion.list_aliases(session, workspace=request.workspace, model=request.model)
            return registry_pb2.ListAliasesResponse(aliases=[convert.alias_pb(r) for r in rows])

        return await self._tx(work)

    async def ListAuditEvents(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListAuditEventsResponse:
            rows, token = promotion.list_audit(
                session,
                workspace=request.workspace,
                subject_id=request.subject_id,
                page=request.page,
            )
            return registry_pb2.ListAuditEventsResponse(
                events=[convert.audit_pb(r) for r in rows],
                page=common_pb2.PageResponse(next_page_token=token),
            )

        return await self._tx(work)

    # --- pipelines ---

    async def SubmitPipelineRun(self, request: Any, context: Any) -> Any:
        require_role(*_WORKERS, action="submit a pipeline run")
        run_id = stable_id("pipe", request.request_id) if request.request_id else new_id("pipe")
        parameters = dict(request.parameters)

        def work(session: Session) -> registry_pb2.SubmitPipelineRunResponse:
            run, created = pipelines.create_run(
                session,
                run_id=run_id,
                spec_yaml=request.spec_yaml,
                parameters=parameters,
                requested_by=request.requested_by or "grpc",
                workspace=request.workspace,
            )
            if created:
                # the same path as a request from another system: the pipeline worker starts it
                enqueue(
                    session,
                    subjects.PIPELINE_RUN_REQUESTED,
                    events_pb2.PipelineRunRequested(
                        meta=event_meta(producer=records.PRODUCER, workspace=run.workspace),
                        run_id=run.id,
                        spec_yaml=run.spec_yaml,
                        parameters=parameters,
                        requested_by=run.requested_by,
                    ),
                    key=run.id,
                    workspace=run.workspace,
                )
            return registry_pb2.SubmitPipelineRunResponse(run=convert.pipeline_run_pb(run))

        return await self._tx(work)

    async def GetPipelineRun(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.GetPipelineRunResponse:
            return registry_pb2.GetPipelineRunResponse(
                run=convert.pipeline_run_pb(pipelines.get_run(session, request.run_id))
            )

        return await self._tx(work)

    async def ListPipelineRuns(self, request: Any, context: Any) -> Any:
        def work(session: Session) -> registry_pb2.ListPipelineRunsResponse:
            query = select(models.PipelineRun).where(
                models.PipelineRun.workspace == (request.workspace or "default")
            )
            if request.statuses:
                query = query.where(
                    models.PipelineRun.status.in_(
                        [convert.status_name(s) for s in request.statuses]
                    )
                )
            rows, token = records.Page.of(request.page).fetch(
                session,
                query.order_by(models.PipelineRun.created_at.desc(), models.PipelineRun.id.desc()),
            )
            return registry_pb2.ListPipelineRunsResponse(
                runs=[convert.pipeline_run_pb(r) for r in rows],
                page=common_pb2.PageResponse(next_page_token=token),
            )

        return await self._tx(work)

    async def CancelPipelineRun(self, request: Any, context: Any) -> Any:
        require_role(*_WORKERS, action="cancel a pipeline run")

        def work(session: Session) -> registry_pb2.CancelPipelineRunResponse:
            run = pipelines.cancel_run(session, request.run_id, request.reason)
            return registry_pb2.CancelPipelineRunResponse(run=convert.pipeline_run_pb(run))

        return await self._tx(work)

    async def ApprovePipelineStage(self, request: Any, context: Any) -> Any:
        require_role("reviewer", action="approve or reject a pipeline stage")
        actor = actor_of(request.actor)

        def work(session: Session) -> registry_pb2.ApprovePipelineStageResponse:
            run = pipelines.approve_stage(
                session,
                run_id=request.run_id,
                stage_name=request.stage,
                approved=request.approved,
                actor=actor,
                comment=request.comment,
            )
            return registry_pb2.ApprovePipelineStageResponse(run=convert.pipeline_run_pb(run))

        return await self._tx(work)

    async def StreamPipelineRunEvents(
        self, request: Any, context: Any
    ) -> AsyncIterator[registry_pb2.StreamPipelineRunEventsResponse]:
        after = request.after_sequence

        def batch(session: Session) -> tuple[list[models.PipelineEvent], bool]:
            run = pipelines.get_run(session, request.run_id)
            rows = list(
                session.scalars(
                    select(models.PipelineEvent)
                    .where(
                        models.PipelineEvent.run_id == run.id, models.PipelineEvent.sequence > after
                    )
                    .order_by(models.PipelineEvent.sequence)
                )
            )
            return rows, run.status in pipelines.TERMINAL

        while True:
            rows, finished = await self._tx(batch)
            for row in rows:
                after = row.sequence
                yield registry_pb2.StreamPipelineRunEventsResponse(
                    event=_job_event(request.run_id, row), stage=row.stage
                )
            if finished and not rows:
                return
            if not rows:
                await asyncio.sleep(STREAM_POLL_S)


LEVELS = {
    "info": common_pb2.EVENT_LEVEL_INFO,
    "warn": common_pb2.EVENT_LEVEL_WARN,
    "error": common_pb2.EVENT_LEVEL_ERROR,
}


def _job_event(run_id: str, row: models.PipelineEvent) -> common_pb2.JobEvent:
    return common_pb2.JobEvent(
        job_id=run_id,
        sequence=row.sequence,
        created_at=convert.timestamp(row.at),
        level=LEVELS.get(row.level, common_pb2.EVENT_LEVEL_INFO),
        kind=common_pb2.EVENT_KIND_STATUS if row.status else common_pb2.EVENT_KIND_MESSAGE,
        message=row.message,
        status=convert.status_value(row.status)
        if row.status
        else common_pb2.JOB_STATUS_UNSPECIFIED,
    )
