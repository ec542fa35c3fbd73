"""The deployment's secret key of the PII ``hash`` operator.

Hashes of personal data are only as private as their key: a digest salted with a guessable
string (the dataset's name) is reversed by hashing a list of names or phone numbers. So the
key is a setting (``ingest.pii_hash_key``) or, unset, 32 random bytes made once and kept in
the service's data dir with mode 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tunewright.ingest.settings import IngestSettings

KEY_FILE = "pii-hash.key"


def hash_key(settings: IngestSettings) -> bytes:
    """The configured key, else the one in ``<ingest_dir>/pii-hash.key`` (made on first use)."""
    if settings.ingest.pii_hash_key is not None:
        return settings.ingest.pii_hash_key.get_secret_value().encode()
    path = settings.ingest_dir / KEY_FILE
    if not path.exists():
        _create(path)
    return bytes.fromhex(path.read_text().strip())


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two workers starting at once must not each write their own key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
