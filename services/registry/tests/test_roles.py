"""Roles behind bearer tokens, per RPC, against the real registry over gRPC: a submitter can
submit work but cannot promote, force-promote, roll back, approve a pipeline stage or register
an evaluation (a forged verdict would pass the promotion gate); a promoter can promote but not
force; a reviewer can approve; a viewer can only read; the platform token (the operator) can do
everything except register an evaluation, which only the evaluator service's own identity may;
the audit names the identity, not what the request claims."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from registry_builders import evaluation_run

from tunewright.core.identities import token_digest
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.registry.server import DEFINITION
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

PLATFORM = "tw-grpc-platform-token-for-the-roles-test"
TOKENS = {role: f"tw-id-{role}-token-0123456789abcdef" for role in
          ("viewer", "submitter", "reviewer", "promoter")}  # fmt: skip
SERVICE_TOKENS = {
    name: f"tw-svc-{name}-token-0123456789abcdef" for name in ("evaluator", "trainer")
}


@pytest.fixture
async def registry(nats_url: str, tmp_path: Path) -> AsyncIterator[RunningService[Any]]:
    identities = tmp_path / "identities.yaml"
    identities.write_text(
        yaml.safe_dump(
            {
                "identities": [
                    {"name": f"{role}-1", "role": role, "token_sha256": token_digest(token)}
                    for role, token in TOKENS.items()
                ]
                + [
                    {"name": name, "role": "service", "token_sha256": token_digest(token)}
                    for name, token in SERVICE_TOKENS.items()
                ]
            }
        )
    )
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0, "auth_token": PLATFORM, "identities_file": str(identities)},
        data_dir=tmp_path,
        registry={"outbox_poll_s": 0.1},
    )
    running = await start_service(DEFINITION, settings)
    yield running
    await running.stop()


def _as(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _code(call: Any, request: Any, token: str) -> grpc.StatusCode:
    try:
        await call(request, metadata=_as(token), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


async def test_each_guarded_rpc_refuses_the_roles_it_must(registry: RunningService[Any]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        version = (
            await stub.RegisterModelVersion(
                registry_pb2.RegisterModelVersionRequest(
                    model_version=registry_pb2.ModelVersion(
                        model="support-bot", base_model="tiny:llama-xxs", method="sft"
                    )
                ),
                metadata=_as(PLATFORM),
            )
        ).model_version
        promote = registry_pb2.PromoteRequest(
            model_version_id=version.id, alias="production", actor="mallory"
        )
        force = registry_pb2.PromoteRequest(
            model_version_id=version.id, alias="production", force=True, reason="r"
        )
        rollback = registry_pb2.RollbackRequest(model="support-bot", alias="production")
        approve = registry_pb2.ApprovePipelineStageRequest(
            run_id="pipe_missing", stage="approve", approved=True
        )
        evaluation = registry_pb2.RegisterEvaluationRequest(
            evaluation=registry_pb2.Evaluation(candidate_model_version_id=version.id)
        )
        denied = grpc.StatusCode.PERMISSION_DENIED
        calls = {
            "promote": (stub.Promote, promote),
            "force-promote": (stub.Promote, force),
            "rollback": (stub.Rollback, rollback),
            "approve": (stub.ApprovePipelineStage, approve),
            "register-evaluation": (stub.RegisterEvaluation, evaluation),
            "register-model": (
                stub.RegisterModelVersion,
                registry_pb2.RegisterModelVersionRequest(
                    model_version=registry_pb2.ModelVersion(model="x", base_model="tiny:a")
                ),
            ),
        }
        expected_denied = {
            "viewer": set(calls) | {"submit"},
            "submitter": set(calls),
            "reviewer": set(calls) - {"approve"},
            "promoter": set(calls) - {"promote", "rollback"},
        }
        for role, token in TOKENS.items():
            for name, (call, request) in calls.items():
                code = await _code(call, request, token)
                if name in expected_denied[role]:
                    assert code == denied, (role, name, code)
                else:  # allowed: whatever the domain says next, it is not a role refusal
                    assert code not in (denied, grpc.StatusCode.UNAUTHENTICATED), (role, name)
            submit = await _code(
                stub.SubmitPipelineRun,
                registry_pb2.SubmitPipelineRunRequest(spec_yaml="not: a pipeline"),
                token,
            )
            assert (submit == denied) == (role == "viewer"), (role, submit)
            # everyone may read
            assert await _code(stub.ListAliases, registry_pb2.ListAliasesRequest(), token) == (
                grpc.StatusCode.OK
            )

        # an unknown token is no identity at all
        assert (
            await _code(stub.ListAliases, registry_pb2.ListAliasesRequest(), "tw-made-up")
            == grpc.StatusCode.UNAUTHENTICATED
        )
        # the platform (services) may force; the audit names who did it
        assert await _code(stub.Promote, force, PLATFORM) == grpc.StatusCode.OK
        second = (
            await stub.RegisterModelVersion(
                registry_pb2.RegisterModelVersionRequest(
                    model_version=registry_pb2.ModelVersion(
                        model="support-bot", base_model="tiny:llama-xxs", method="dpo"
                    )
                ),
                metadata=_as(PLATFORM),
            )
        ).model_version
        force.model_version_id = second.id
        assert await _code(stub.Promote, force, PLATFORM) == grpc.StatusCode.OK
        rollback.actor = "mallory"  # what a request claims is not who it is
        assert await _code(stub.Rollback, rollback, TOKENS["promoter"]) == grpc.StatusCode.OK
        audit = await stub.ListAuditEvents(
            registry_pb2.ListAuditEventsRequest(), metadata=_as(PLATFORM)
        )
        rollbacks = [e for e in audit.events if e.action == "rollback"]
        assert [e.actor for e in rollbacks] == ["promoter-1"]


async def test_only_the_evaluator_service_registers_evaluations(
    registry: RunningService[Any],
) -> None:
    """A verdict the gate reads must come from the evaluator: the platform's admin token, a
    promoter and the trainer's own service identity are all refused; the evaluator's passes."""
    from tunewright.core.interceptors import error_details

    async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        version = (
            await stub.RegisterModelVersion(
                registry_pb2.RegisterModelVersionRequest(
                    model_version=registry_pb2.ModelVersion(
                        model="support-bot", base_model="tiny:llama-xxs", method="sft"
                    )
                ),
                metadata=_as(SERVICE_TOKENS["trainer"]),  # a service may register versions
            )
        ).model_version
        evaluation = registry_pb2.RegisterEvaluationRequest(
            evaluation=registry_pb2.Evaluation(run=evaluation_run("eval-forged", version.id))
        )
        for token in (PLATFORM, TOKENS["promoter"], SERVICE_TOKENS["trainer"]):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RegisterEvaluation(evaluation, metadata=_as(token), timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error_details(refused.value)[0] == "SERVICE_IDENTITY_REQUIRED"
            assert "only the evaluator service" in (refused.value.details() or "")
        stored = await stub.RegisterEvaluation(
            evaluation, metadata=_as(SERVICE_TOKENS["evaluator"]), timeout=10
        )
        assert stored.evaluation.id


def test_the_service_role_is_only_for_services(tmp_path: Path) -> None:
    from tunewright.core.identities import load_identities

    path = tmp_path / "identities.yaml"
    path.write_text(
        yaml.safe_dump(
            {"identities": [{"name": "mallory", "role": "service", "token_sha256": "a" * 64}]}
        )
    )
    with pytest.raises(ValueError, match="role service is for the services"):
        load_identities(path)
