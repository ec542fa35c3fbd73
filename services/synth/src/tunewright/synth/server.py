"""The synth service process: ``tunewright-synth`` or ``python -m tunewright.synth.server``.

Owns synthetic examples, preference candidates and human feedback.
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
from tunewright.synth.settings import SynthSettings
from tunewright.synth.v1 import synth_pb2, synth_pb2_grpc

SERVICE_NAME = synth_pb2.DESCRIPTOR.services_by_name["SynthService"].full_name


def grpc_bindings(context: ServiceContext[SynthSettings]) -> list[GrpcBinding]:
    # the generated base servicer answers UNIMPLEMENTED for every RPC
    servicer = synth_pb2_grpc.SynthServiceServicer()
    return [GrpcBinding(synth_pb2_grpc.add_SynthServiceServicer_to_server, servicer, SERVICE_NAME)]


def consumers(context: ServiceContext[SynthSettings]) -> list[Consumer]:
    return [
        Consumer(
            "synth-worker", reject_until_implemented("synth")
        ),  # synthetic-data, candidate and feedback requests
    ]


DEFINITION = ServiceDefinition(
    name="synth", settings_cls=SynthSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
