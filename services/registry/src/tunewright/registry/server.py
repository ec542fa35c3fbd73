"""The registry service process: ``tunewright-registry`` or ``python -m tunewright.registry.server``.

Owns datasets, runs, models, lineage, promotion and pipelines.
Skeleton for now: see ``reject_until_implemented`` in tunewright.core.service.
"""

from __future__ import annotations

import sys

from tunewright.core.service import (
    Consumer,
    GrpcBinding,
    ServiceContext,
    ServiceDefinition,
    log_and_ack,
    reject_until_implemented,
)
from tunewright.core.service import main as run_service_main
from tunewright.registry.settings import RegistrySettings
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


def grpc_bindings(context: ServiceContext[RegistrySettings]) -> list[GrpcBinding]:
    # the generated base servicer answers UNIMPLEMENTED for every RPC
    servicer = registry_pb2_grpc.RegistryServiceServicer()
    return [
        GrpcBinding(registry_pb2_grpc.add_RegistryServiceServicer_to_server, servicer, SERVICE_NAME)
    ]


def consumers(context: ServiceContext[RegistrySettings]) -> list[Consumer]:
    return [
        Consumer("pipeline-worker", reject_until_implemented("registry")),  # pipeline run requests
        Consumer("registry-facts", log_and_ack("registry")),  # every fact
        Consumer("pipeline-facts", log_and_ack("registry")),  # every fact
    ]


DEFINITION = ServiceDefinition(
    name="registry", settings_cls=RegistrySettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
