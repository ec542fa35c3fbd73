"""Where base-model plugins keep weights they convert (GGUF -> safetensors), and content hashes.

Every service that rebuilds a base model (trainer, evaluator, synth, serve, the CLI's export)
finds the same cache: ``$TUNEWRIGHT_MODEL_CACHE``, which a service sets to
``<data_dir>/models`` at start-up unless the operator set it (child processes inherit it), else
``~/.cache/tunewright/models``. Entries are named by the sha256 of what they were made from, so
two services or hosts that share the folder never disagree about what is in it. The folder and
what is converted into it are owner-only (0700 / 0600, :func:`ensure_cache_dir`,
:func:`tunewright.core.artifacts.make_private`): they are model weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tunewright.core.private_files import private_dir

ENV = "TUNEWRIGHT_MODEL_CACHE"
_CHUNK = 1 << 20
# (path, size, mtime_ns) -> sha256: a file is hashed once per process
_digests: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    configured = os.environ.get(ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "tunewright" / "models"


def ensure_cache_dir(cache: Path | None = None) -> Path:
    """``cache`` (default :func:`cache_dir`), created owner-only (0700) whatever the umask."""
    return private_dir(cache or cache_dir())


def use_data_dir(data_dir: Path) -> None:
    """A service's default: ``<data_dir>/models``, unless ``$TUNEWRIGHT_MODEL_CACHE`` is set."""
    os.environ.setdefault(ENV, str(data_dir / "models"))


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) for this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def files_sha256(files: list[Path], root: Path) -> str:
    """One digest over several files: their paths relative to ``root`` and their sha256s."""
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(f"{file.relative_to(root).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()
