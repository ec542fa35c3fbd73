"""Container health check: the service's own grpc.health.v1 answer, ``SERVING`` or exit 1.

Run by HEALTHCHECK in every tunewright image (``python /opt/tunewright/healthcheck.py``). It
asks the server in this container, on the port the service binds (``TW_GRPC__PORT``, a
setting); with ``TW_GRPC__TLS_CERT_FILE`` set it trusts that certificate, which must name the
host given as the first argument (the compose service name). Health is exempt from the bearer
token, so no secret is needed here. For serve this covers its HTTP API too: the API runs in the
same process, and a failed HTTP server turns the gRPC health to NOT_SERVING.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    target = f"127.0.0.1:{os.environ.get('TW_GRPC__PORT', '50051')}"
    cert = os.environ.get("TW_GRPC__TLS_CERT_FILE")
    if cert:
        with open(cert, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        # the certificate names the service, not 127.0.0.1
        name = sys.argv[1] if len(sys.argv) > 1 else "localhost"
        channel = grpc.secure_channel(
            target, credentials, options=[("grpc.ssl_target_name_override", name)]
        )
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
