"""Test helper process: applies ONE fact from ``registry-facts`` with the real registry code,
then kills itself with SIGKILL before the message is acked (the crash the test is about).

usage: python registry_crash_consumer.py NATS_URL DATABASE_URL ACK_WAIT_S
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys

from tunewright.core import catalog
from tunewright.core.bus import Delivery, EventBus
from tunewright.registry.db import Database
from tunewright.registry.outbox import OutboxPublisher
from tunewright.registry.server import Registry


async def main(nats_url: str, db_url: str, ack_wait_s: float) -> None:
    spec = dataclasses.replace(catalog.consumer("registry-facts"), ack_wait_s=ack_wait_s)
    bus = await EventBus.connect(nats_url, name="crashing-registry", consumers=[spec])
    db = Database(db_url)
    app = Registry(db=db, outbox=OutboxPublisher(db, bus.publish))

    async def apply_then_die(delivery: Delivery) -> None:
        await app.on_fact(delivery)  # committed
        print("applied", delivery.msg_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # ... and never acked

    await bus.consume("registry-facts", apply_then_die)
    await asyncio.sleep(60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
