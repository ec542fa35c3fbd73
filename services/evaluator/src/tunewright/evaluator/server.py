"""The evaluator service process: ``tunewright-evaluator`` or ``python -m tunewright.evaluator.server``.

Owns metrics, baseline comparison and the promotion gate.
Skeleton for now: see ``reject_until_implemented`` in tunewright.core.service.
"""

from __future__ import annotations

import sys

from tunewright.core.service import (
    Consumer,
    GrpcBinding,
    ServiceContext,
    ServiceDefinition,
    reject_until_implemented,
)
from tunewright.core.service import main as run_service_main
from tunewright.evaluator.settings import EvaluatorSettings
from tunewright.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc

SERVICE_NAME = evaluator_pb2.DESCRIPTOR.services_by_name["EvaluatorService"].full_name


def grpc_bindings(context: ServiceContext[EvaluatorSettings]) -> list[GrpcBinding]:
    # the generated base servicer answers UNIMPLEMENTED for every RPC
    servicer = evaluator_pb2_grpc.EvaluatorServiceServicer()
    return [
        GrpcBinding(
            evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server, servicer, SERVICE_NAME
        )
    ]


def consumers(context: ServiceContext[EvaluatorSettings]) -> list[Consumer]:
    return [
        Consumer(
            "evaluator-worker", reject_until_implemented("evaluator")
        ),  # evaluation run requests
    ]


DEFINITION = ServiceDefinition(
    name="evaluator", settings_cls=EvaluatorSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
