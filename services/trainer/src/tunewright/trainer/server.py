"""The trainer service process: ``tunewright-trainer`` or ``python -m tunewright.trainer.server``.

Owns SFT / DPO / reward / RLHF training jobs.
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
from tunewright.trainer.settings import TrainerSettings
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name


def grpc_bindings(context: ServiceContext[TrainerSettings]) -> list[GrpcBinding]:
    # the generated base servicer answers UNIMPLEMENTED for every RPC
    servicer = trainer_pb2_grpc.TrainerServiceServicer()
    return [
        GrpcBinding(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)
    ]


def consumers(context: ServiceContext[TrainerSettings]) -> list[Consumer]:
    return [
        Consumer("trainer-worker", reject_until_implemented("trainer")),  # training job requests
    ]


DEFINITION = ServiceDefinition(
    name="trainer", settings_cls=TrainerSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
