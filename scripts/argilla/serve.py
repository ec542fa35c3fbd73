"""Run argilla-server 2.8.0 without Elasticsearch: ``.venv-argilla/bin/python scripts/argilla/serve.py``.

One process holds everything Argilla needs on a small box:

1. Redis: the URL in ``$ARGILLA_REDIS_URL`` (argilla-server's own variable; preferred: a URL
   with a password on the command line shows in ``ps``) or ``--redis-url``, else Debian's
   ``redis-server`` started here on a free loopback port with nothing on disk, stopped when
   this process ends. That one requires a password (``requirepass``, a new random one each
   start, kept 0600 in ``<home>/redis/redis.password``; its config goes in on stdin, never
   on a command line), binds 127.0.0.1 only and runs in protected mode: rq's worker unpickles
   the jobs it finds in Redis, so only clients holding the password may queue them;
2. the SQL database (SQLite in ``--home`` unless ``ARGILLA_DATABASE_URL`` says otherwise),
   migrated to head; the users of ``--users`` created once (owner with its API key, annotators),
   all members of ``--workspace``;
3. the in-memory search engine (``memory_search.py``, registered through argilla-server's own
   ``SearchEngine.register``), rebuilt from SQL with argilla-server's ``Reindexer``;
4. the rq worker for Argilla's background jobs, in a thread of this process (a forking worker
   would update a copy of the index), with timer-based job timeouts (signals only work in the
   main thread);
5. uvicorn serving the API and the web UI on ``--host:--port``.

``--users`` is a JSON file (keep it private: it holds passwords and API keys)::

    {"users": [{"username": "owner", "role": "owner", "password": "...", "api_key": "..."},
               {"username": "annotator", "role": "annotator", "password": "...",
                "api_key": "..."}]}

Prints ``argilla: ready on http://HOST:PORT`` once the API answers. Runs in argilla-server's own
venv (its pins clash with tunewright's): imports argilla_server, never tunewright.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: SIGTERM when this launcher dies, however it dies (uvicorn re-raises the
    SIGTERM it caught after shutting down, so no ``finally`` of ours runs then)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` as an owner-only file (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def redis_config(port: int, password: str, directory: Path) -> str:
    """redis.conf for the Redis started here: loopback, protected, password, nothing on disk."""
    return "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"requirepass {password}",
            'save ""',
            "appendonly no",
            f"dir {directory}",
            f"logfile {directory / 'redis.log'}",
            "",
        ]
    )


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's redis-server on a free loopback port, in memory only (no RDB, no AOF), with a
    new random password; returns the process and the URL with the password in it."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(
            "argilla: redis-server not found; install it (Debian: apt-get install redis-server) "
            "or pass --redis-url"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    password = secrets.token_hex(32)  # hex: nothing to quote in redis.conf or in a URL
    _write_private(directory / "redis.password", password + "\n")
    port = _free_port()
    # the config (password included) on stdin: `redis-server -` reads it from there, so it is
    # on no command line (`ps`) and in no extra file
    proc = subprocess.Popen(
        [binary, "-"],
        stdin=subprocess.PIPE,
        preexec_fn=_die_with_parent,
        cwd=directory,
    )
    assert proc.stdin is not None
    proc.stdin.write(redis_config(port, password, directory).encode())
    proc.stdin.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                reply = b""
                while len(reply) < 12 and (chunk := sock.recv(64)):
                    reply += chunk
                if reply.startswith(b"+OK\r\n+PONG"):
                    return proc, f"redis://:{password}@127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
        if proc.poll() is not None:
            break
    proc.kill()
    sys.exit(f"argilla: redis-server did not start; see {directory / 'redis.log'}")


async def _setup(users: list[dict[str, str]], workspace: str) -> None:
    """Create the users that do not exist yet (silently: the CLI's helper prints API keys)."""
    from argilla_server.cli.database.users.utils import get_or_new_workspace
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, UserRole

    async with AsyncSessionLocal() as db:
        for user in users:
            if await accounts.get_user_by_username(db, user["username"]) is not None:
                continue
            await User.create(
                db,
                first_name=user["username"],
                username=user["username"],
                role=UserRole(user["role"]),
                password_hash=accounts.hash_password(user["password"]),
                workspaces=[await get_or_new_workspace(db, workspace)],
                # without one, argilla-server generates a key
                **({"api_key": user["api_key"]} if user.get("api_key") else {}),
            )
            print(f"argilla: user {user['username']} ({user['role']}) created", flush=True)


async def _reindex() -> int:
    from argilla_server.cli.search_engine.reindex import Reindexer
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.search_engine import SearchEngine
    from argilla_server.settings import settings

    records = 0
    async with (
        AsyncSessionLocal() as db,
        SearchEngine.get_by_name(settings.search_engine) as engine,
    ):
        async for dataset in Reindexer.reindex_datasets(db, engine):
            async for batch in Reindexer.reindex_dataset_records(db, engine, dataset):
                records += len(batch)
    return records


def _start_worker() -> threading.Thread:
    from argilla_server.jobs.queues import DEFAULT_QUEUE, HIGH_QUEUE, REDIS_CONNECTION
    from rq import SimpleWorker
    from rq.timeouts import TimerDeathPenalty

    class ThreadWorker(SimpleWorker):
        death_penalty_class = TimerDeathPenalty

        def _install_signal_handlers(self) -> None:
            pass  # only the main thread may; uvicorn owns SIGTERM/SIGINT

    worker = ThreadWorker([HIGH_QUEUE, DEFAULT_QUEUE], connection=REDIS_CONNECTION)
    thread = threading.Thread(
        target=worker.work, kwargs={"logging_level": "WARNING"}, name="rq-worker", daemon=True
    )
    thread.start()
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--home", type=Path, required=True, help="Argilla's data folder.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6900)
    parser.add_argument(
        "--redis-url",
        help="Use this Redis instead of starting redis-server (prefer $ARGILLA_REDIS_URL: a "
        "password on the command line is visible to every local user).",
    )
    parser.add_argument("--users", type=Path, help="JSON file with the users to create.")
    parser.add_argument("--workspace", default="tunewright", help="Workspace every user joins.")
    args = parser.parse_args()

    started = time.monotonic()
    home = args.home.resolve()
    # the SQLite database (password hashes, API keys, every record and response) lives here
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    redis_proc = None
    redis_url = os.environ.get("ARGILLA_REDIS_URL") or args.redis_url
    if not redis_url:
        redis_proc, redis_url = start_redis(home / "redis")
    # argilla_server reads its settings from the environment when first imported
    os.environ.update(
        ARGILLA_HOME_PATH=str(home),
        ARGILLA_SEARCH_ENGINE="memory",
        ARGILLA_REDIS_URL=redis_url,
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    sys.path.insert(0, str(HERE))
    try:
        import memory_search  # noqa: F401  (registers the "memory" engine)
        from argilla_server.cli.database.migrate import migrate_db

        migrate_db(revision="head")
        users = json.loads(args.users.read_text())["users"] if args.users else []
        asyncio.run(_setup(users, args.workspace))
        records = asyncio.run(_reindex())
        _start_worker()

        import uvicorn
        from argilla_server._app import app

        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
        server = uvicorn.Server(config)

        def announce() -> None:
            while not server.started:
                time.sleep(0.05)
            print(
                f"argilla: ready on http://{args.host}:{args.port} "
                f"({records} records reindexed, {time.monotonic() - started:.1f} s)",
                flush=True,
            )

        threading.Thread(target=announce, daemon=True).start()
        server.run()
    finally:
        if redis_proc is not None:
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
