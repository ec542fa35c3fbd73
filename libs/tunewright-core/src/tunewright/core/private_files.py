"""Owner-only files and folders (0600 / 0700, whatever the umask) for everything the platform
writes: artifacts, work folders, reports, caches. Kept apart from :mod:`tunewright.core.artifacts`
so plugins can use it without importing the NATS client."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Final, Literal, overload

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents as owner-only folders (0700), whatever the umask.

    An existing ``path`` is tightened to 0700 as well; parents that already existed are left as
    they are (``/tmp``, a home folder).
    """
    path = Path(path)
    missing = []
    parent = path
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            pass  # another process made it first; it is tightened below like ours
        if folder != path:
            os.chmod(folder, PRIVATE_DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


@overload
def open_private(path: Path, mode: Literal["wb", "ab"] = "wb") -> io.BufferedWriter: ...
@overload
def open_private(path: Path, mode: Literal["w", "a"]) -> io.TextIOWrapper: ...
def open_private(path: Path, mode: str = "wb") -> io.BufferedWriter | io.TextIOWrapper:
    """Open ``path`` for writing as an owner-only file (0600), whatever the umask.

    :param mode: ``"wb"``/``"w"`` (truncate) or ``"ab"``/``"a"`` (append); text is UTF-8. A
        file that already exists is tightened to 0600 too.
    """
    if mode not in ("w", "wb", "a", "ab"):
        raise ValueError(f"open_private writes only (w, wb, a, ab), got mode {mode!r}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        raw = os.fdopen(fd, "wb")  # O_APPEND (on the descriptor) makes every write append
    except BaseException:
        os.close(fd)
        raise
    return raw if "b" in mode else io.TextIOWrapper(raw, encoding="utf-8")


def write_private(path: Path, data: bytes | str) -> None:
    """``Path.write_bytes`` / ``write_text`` (UTF-8) as an owner-only file (0600)."""
    with open_private(path, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def make_private(path: Path) -> Path:
    """Tighten a tree another library wrote (``save_pretrained``, a trainer's checkpoints).

    Folders become 0700, regular files 0600 (0700 when their owner may execute them); symlinks
    are neither followed nor changed.
    """
    path = Path(path)
    if not path.is_dir():
        os.chmod(path, private_file_mode(path.stat().st_mode))
        return path
    for root, _dirs, files in os.walk(path):
        os.chmod(root, PRIVATE_DIR_MODE)
        for name in files:
            file = os.path.join(root, name)
            st = os.lstat(file)
            if stat.S_ISREG(st.st_mode):
                os.chmod(file, private_file_mode(st.st_mode))
    return path


def private_file_mode(mode: int) -> int:
    """0600, or 0700 for a file its owner may execute."""
    return PRIVATE_DIR_MODE if mode & stat.S_IXUSR else PRIVATE_FILE_MODE
