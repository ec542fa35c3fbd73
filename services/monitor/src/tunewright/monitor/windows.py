"""Windows of traffic: interactions collected per (workspace, model version) until the window
is full or old enough, then closed in one go.

The handler of each interaction waits until its window has been closed (handed to ingest), and
only then is the message acknowledged: raw traffic never sits in the monitor's own storage,
and a crash before the close leaves every message of the window in the stream to be
delivered again (same interactions, same window id, same ingest job).

Every waiting handler holds one of the consumer's ``capacity`` slots. With several model
versions no window may fill while all slots wait on partial ones, so once the open windows
hold ``capacity`` handlers the fullest is closed early (a smaller window, never a stall until
``max_wait_s``). A failed close is :class:`Unavailable` for every handler: their messages come
back with the consumer's backoff rather than being dead-lettered with their raw text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tunewright.core.errors import Unavailable
from tunewright.monitor.traffic import Interaction

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (workspace, model version id)
Close = Callable[[str, str, list[Interaction]], Awaitable[None]]


@dataclass
class _Open:
    future: asyncio.Future[None]
    timer: asyncio.TimerHandle
    items: dict[str, Interaction] = field(default_factory=dict)
    handlers: int = 0  # handlers waiting on this window (consumer slots it holds)


class WindowBuffer:
    def __init__(
        self, *, size: int, max_wait_s: float, close: Close, capacity: int | None = None
    ) -> None:
        self.size = size
        self.max_wait_s = max_wait_s
        # handlers that may wait at once (the consumer's concurrency); default: one window
        self.capacity = capacity if capacity is not None else size
        self._close_cb = close
        self._open: dict[Key, _Open] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, workspace: str, item: Interaction) -> None:
        """Add ``item`` to its window; returns once that window is closed (raises if it failed)."""
        key = (workspace, item.model_version_id)
        window = self._open.get(key)
        if window is None:
            loop = asyncio.get_running_loop()
            window = _Open(
                future=loop.create_future(),
                timer=loop.call_later(self.max_wait_s, self._close_now, key),
            )
            self._open[key] = window
        # a redelivered interaction still in the open window joins it once
        window.items.setdefault(item.interaction_id, item)
        window.handlers += 1
        future = window.future
        if len(window.items) >= self.size:
            self._close_now(key)
        elif sum(w.handlers for w in self._open.values()) >= self.capacity:
            # every slot waits on a partial window: free the most of them at once
            self._close_now(max(self._open, key=lambda k: len(self._open[k].items)))
        await asyncio.shield(future)

    def _close_now(self, key: Key) -> None:
        window = self._open.pop(key, None)
        if window is None:
            return
        window.timer.cancel()
        task = asyncio.create_task(self._close(key, window))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, key: Key, window: _Open) -> None:
        workspace, model_version_id = key
        try:
            await self._close_cb(workspace, model_version_id, list(window.items.values()))
        except Exception as exc:  # every waiting handler re-raises it (their messages go back)
            log.warning(
                "closing a traffic window failed model_version_id=%s error=%s",
                model_version_id,
                type(exc).__name__,
            )
            # retryable whatever it was: a dead letter would keep the raw text for its TTL
            if not isinstance(exc, Unavailable):
                exc = Unavailable(
                    f"closing the traffic window failed: {type(exc).__name__}",
                    reason="WINDOW_CLOSE_FAILED",
                )
            window.future.set_exception(exc)
        else:
            window.future.set_result(None)

    def open_counts(self) -> dict[Key, int]:
        return {key: len(w.items) for key, w in self._open.items()}
