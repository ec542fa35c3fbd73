"""The ingest service process: ``tunewright-ingest`` or ``python -m tunewright.ingest.server``.

Owns validate, PII-scrub, deduplicate, filter and split uploaded records.
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
from tunewright.ingest.settings import IngestSettings
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def grpc_bindings(context: ServiceContext[IngestSettings]) -> list[GrpcBinding]:
    # the generated base servicer answers UNIMPLEMENTED for every RPC
    servicer = ingest_pb2_grpc.IngestServiceServicer()
    return [
        GrpcBinding(ingest_pb2_grpc.add_IngestServiceServicer_to_server, servicer, SERVICE_NAME)
    ]


def consumers(context: ServiceContext[IngestSettings]) -> list[Consumer]:
    return [
        Consumer(
            "ingest-worker", reject_until_implemented("ingest")
        ),  # tw.ingest.dataset.requested
    ]


DEFINITION = ServiceDefinition(
    name="ingest", settings_cls=IngestSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
