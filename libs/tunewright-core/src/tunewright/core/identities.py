"""Who is calling: identities behind bearer tokens, their roles, and the role checks RPCs make.

A gRPC server with ``grpc.auth_token`` accepts that token as the **platform** identity (role
``admin``: the services and the operator's CLI). ``grpc.identities_file`` adds people and
systems with their own tokens and roles; the file stores only each token's sha256, so reading
it gives no token away::

    identities:
      - {name: alice, role: promoter, token_sha256: 3b1f...}
      - {name: ci-bot, role: submitter, token_sha256: 9ac4...}

``tunewright identity add NAME --role ROLE`` writes an entry and prints the token once.

Roles (an ``admin`` may do everything):

- ``viewer``: read (``Get*``, ``List*``, ``Stream*Events``, ``ValidateTrainingJob``, chat
  completions, on every service: the server's auth interceptor refuses a viewer any other
  call).
- ``submitter``: read, and submit work (ingest, training, evaluation, pipeline runs).
- ``reviewer``: a submitter who may approve or reject a pipeline's human gate.
- ``promoter``: a submitter who may promote (not forced) and roll back.
- ``admin``: also forced promotions.

The platform's services have identities of their own (role ``service``, named after the
service; ``tunewright up`` and ``compose/setup.sh`` make one token per service and hand each
service only its own as ``grpc.client_token``). A service may do what an admin may, and some
calls are reserved to one service: only ``evaluator`` registers evaluations, so a verdict
the gate reads was written by the evaluator, not by whoever holds an admin token.

The interceptor puts the caller's identity in a context variable for the call;
:func:`require_role` reads it. With auth off (no token configured: the explicitly insecure
mode) there is no identity and nothing is checked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from tunewright.core.errors import PermissionDenied

ROLES: Final = ("viewer", "submitter", "reviewer", "promoter", "admin")
#: the role of the platform's own services, each its own identity (not for people)
SERVICE_ROLE: Final = "service"
SERVICE_NAMES: Final = ("registry", "ingest", "synth", "trainer", "evaluator", "monitor", "serve")
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.@")
# the RPCs that only read, by name, on every service (a new write RPC is refused to viewers
# unless it is named like a read: the safe way round)
# (a chat completion reads a model: serve's path for anyone allowed to use the platform)
_READ_METHOD: Final = re.compile(
    r"(Get|List)\w*|Stream\w*Events|ValidateTrainingJob|(Create|Stream)ChatCompletion"
)


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    role: str


PLATFORM: Final = Identity("platform", "admin")
_current: ContextVar[Identity | None] = ContextVar("tw_identity", default=None)


def current_identity() -> Identity | None:
    """The identity of the gRPC call being handled (``None`` when auth is off)."""
    return _current.get()


@contextmanager
def identity_scope(identity: Identity) -> Iterator[None]:
    token = _current.set(identity)
    try:
        yield
    finally:
        _current.reset(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not name or len(name) > 64 or set(name) - _NAME_CHARS:
        raise ValueError(f"identity name {name!r}: 1-64 characters of a-z, 0-9, '-', '_', '.', '@'")
    return name


def load_identities(path: Path) -> dict[str, Identity]:
    """token sha256 -> identity, from an identities file; errors name the entry."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ValueError(f"identities file {path}: {exc.strerror}") from None
    entries = raw.get("identities") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"identities file {path}: expected a mapping with an 'identities' list")
    found: dict[str, Identity] = {}
    for i, entry in enumerate(entries):
        where = f"identities file {path}, entry {i}"
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "token_sha256"}:
            raise ValueError(f"{where}: needs exactly name, role and token_sha256")
        role, digest = str(entry["role"]), str(entry["token_sha256"]).lower()
        if role == SERVICE_ROLE:
            if entry["name"] not in SERVICE_NAMES:
                raise ValueError(
                    f"{where}: role service is for the services ({', '.join(SERVICE_NAMES)})"
                )
        elif role not in ROLES:
            raise ValueError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        if len(digest) != 64 or set(digest) - set("0123456789abcdef"):
            raise ValueError(f"{where}: token_sha256 is not a sha256 hex digest")
        if digest in found:
            raise ValueError(f"{where}: the same token is listed twice")
        found[digest] = Identity(check_name(str(entry["name"])), role)
    return found


def require_role(*roles: str, action: str) -> Identity | None:
    """The calling identity if it has one of ``roles`` (or is an admin); PermissionDenied
    naming the action otherwise. ``None``: auth is off, nothing to check."""
    identity = current_identity()
    if identity is None or identity.role in ("admin", SERVICE_ROLE) or identity.role in roles:
        return identity
    needed = " or ".join((*roles, "admin")) if roles else "admin"
    raise PermissionDenied(
        f"{identity.name} (role {identity.role}) may not {action}: that needs role {needed}",
        reason="ROLE_REQUIRED",
    )


def viewer_refusal(identity: Identity, method: str) -> str | None:
    """Why ``identity`` may not call ``method`` (``"/pkg.Service/Name"``) at all, or None:
    viewers only read. Finer checks (promote, approve, ...) are the handlers' own."""
    name = method.rsplit("/", 1)[-1]
    if identity.role != "viewer" or _READ_METHOD.fullmatch(name):
        return None
    return (
        f"{identity.name} (role viewer) may not call {name}: viewers only read; that needs "
        "role submitter or above"
    )


def require_service(service: str, *, action: str) -> Identity | None:
    """The calling identity if it is the platform service ``service`` itself; PermissionDenied
    for anyone else, admins included. ``None``: auth is off, nothing to check."""
    identity = current_identity()
    if identity is None or identity == Identity(service, SERVICE_ROLE):
        return identity
    raise PermissionDenied(
        f"{identity.name} (role {identity.role}) may not {action}: only the {service} "
        "service's own identity may",
        reason="SERVICE_IDENTITY_REQUIRED",
    )


def actor_of(requested: str) -> str:
    """Who an audit entry names: the calling identity when it is a person or system of its
    own; the platform identity (the operator's CLI) and the services report who they act
    for."""
    identity = current_identity()
    if identity is None or identity == PLATFORM or identity.role == SERVICE_ROLE:
        return requested
    return identity.name
