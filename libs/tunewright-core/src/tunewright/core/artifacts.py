"""Content-addressed artifact store: datasets, adapters, reports, addressed by their sha256.

An :class:`ArtifactRef` names content by hash (``tw-artifact:sha256:<hex>``), so the same
bytes are stored once, a reference can never silently point at other bytes, and puts are
idempotent. Every read re-hashes what it returns and raises :class:`ArtifactCorrupted` on a
mismatch. Folders (PEFT adapters) are stored as a deterministic tar: the same folder always
gives the same hash.

Backends: :class:`LocalArtifactStore` (a directory, the default) and
:class:`NatsObjectArtifactStore` (a JetStream object store bucket, multi-host without extra
infrastructure). Both are registered as artifact-store plugins ``local`` and ``nats`` by
:mod:`tunewright.core.builtin_plugins`.

Artifacts hold training data and weights, so what this module writes is owner-only (folders
0700, files 0600 or 0400) whatever the process umask. The helpers that do it
(:func:`private_dir`, :func:`open_private`, :func:`write_private`, :func:`make_private`) are
what the services use for their own work folders, datasets, reports and caches.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from tunewright.core.errors import NotFound, PermanentError
from tunewright.core.private_files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    make_private,
    open_private,
    private_dir,
    private_file_mode,
    write_private,
)

URI_PREFIX: Final = "tw-artifact:sha256:"
OCTET_STREAM: Final = "application/octet-stream"
TAR: Final = "application/x-tar"
#: default bucket of :class:`NatsObjectArtifactStore`
ARTIFACTS_BUCKET: Final = "TW_ARTIFACTS"

_CHUNK: Final = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: a stored artifact: owner-only and read-only (content addressing: never rewritten in place)
STORED_FILE_MODE: Final = 0o400


class ArtifactNotFound(NotFound):
    """No artifact with this hash in the store."""

    def __init__(self, ref: ArtifactRef) -> None:
        super().__init__(f"artifact {ref.uri} not found", reason="ARTIFACT_NOT_FOUND")
        self.ref = ref


class ArtifactCorrupted(PermanentError):
    """Stored bytes do not hash to the reference: the copy is damaged (or was tampered with)."""

    code = "DATA_LOSS"

    def __init__(self, ref: ArtifactRef, *, actual_sha256: str, actual_size: int) -> None:
        super().__init__(
            f"artifact {ref.uri} is corrupted: expected sha256 {ref.sha256} "
            f"({ref.size_bytes} bytes), read sha256 {actual_sha256} ({actual_size} bytes)",
            reason="ARTIFACT_CORRUPTED",
        )
        self.ref = ref
        self.expected = ref.sha256
        self.actual = actual_sha256


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A reference to stored content.

    :param sha256: lowercase hex digest of the content.
    :param size_bytes: content length; ``None`` when only the hash is known (from a URI).
    :param media_type: what the bytes are (``application/x-tar`` for folders).
    """

    sha256: str
    size_bytes: int | None = None
    media_type: str = OCTET_STREAM

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex characters, got {self.sha256!r}")

    @property
    def uri(self) -> str:
        return URI_PREFIX + self.sha256

    @classmethod
    def from_uri(
        cls, uri: str, *, size_bytes: int | None = None, media_type: str = OCTET_STREAM
    ) -> ArtifactRef:
        """Parse ``tw-artifact:sha256:<hex>``."""
        if not uri.startswith(URI_PREFIX):
            raise ValueError(f"not an artifact URI (expected {URI_PREFIX}<hex>): {uri!r}")
        return cls(uri.removeprefix(URI_PREFIX), size_bytes, media_type)

    def __str__(self) -> str:
        return self.uri


def _check(ref: ArtifactRef, digest: str, size: int) -> None:
    if digest != ref.sha256 or (ref.size_bytes is not None and size != ref.size_bytes):
        raise ArtifactCorrupted(ref, actual_sha256=digest, actual_size=size)


def _hash_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- owner-only files ------------------------------------------------------------------


class ArtifactStore(ABC):
    """The interface every backend implements. All methods are async; files stream in chunks.

    Reads verify the hash and raise :class:`ArtifactCorrupted`; a missing artifact raises
    :class:`ArtifactNotFound`.
    """

    @abstractmethod
    async def put_bytes(self, data: bytes, media_type: str = OCTET_STREAM) -> ArtifactRef: ...

    @abstractmethod
    async def put_file(self, path: Path, media_type: str = OCTET_STREAM) -> ArtifactRef:
        """Store a file's content, streamed (constant memory)."""

    @abstractmethod
    async def get_bytes(self, ref: ArtifactRef) -> bytes: ...

    @abstractmethod
    async def get_file(self, ref: ArtifactRef, dest: Path) -> Path:
        """Write the content to ``dest`` (replaced atomically, only once verified)."""

    @abstractmethod
    async def exists(self, ref: ArtifactRef) -> bool: ...

    @abstractmethod
    async def delete(self, ref: ArtifactRef) -> bool:
        """Remove the artifact; False if it was not there."""

    async def put_dir(self, path: Path) -> ArtifactRef:
        """Store a folder as a deterministic tar (sorted, zeroed times and owners)."""
        with tempfile.TemporaryDirectory(prefix="tw-artifact-") as tmp:
            tar_path = Path(tmp) / "dir.tar"
            await asyncio.to_thread(write_deterministic_tar, Path(path), tar_path)
            return await self.put_file(tar_path, TAR)

    async def get_dir(self, ref: ArtifactRef, dest: Path) -> Path:
        """Unpack a folder stored by :meth:`put_dir` into ``dest`` (absent or empty)."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise FileExistsError(f"{dest} exists and is not an empty directory")
        with tempfile.TemporaryDirectory(prefix="tw-artifact-") as tmp:
            tar_path = await self.get_file(ref, Path(tmp) / "dir.tar")
            await asyncio.to_thread(safe_extract_tar, tar_path, dest)
        return dest


# --- deterministic folders -------------------------------------------------------------


def write_deterministic_tar(src: Path, out: Path) -> None:
    """Tar ``src``'s contents so the same tree always gives the same bytes.

    Entries are sorted by path; times, owners and permissions beyond the executable bit are
    dropped. Symlinks and special files are refused (they would not round-trip safely).
    """
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a directory")
    paths = sorted(src.rglob("*"), key=lambda p: p.relative_to(src).as_posix())
    with (
        open_private(out, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in paths:
            st = path.lstat()
            info = tarfile.TarInfo(path.relative_to(src).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                raise ValueError(f"cannot store {path}: only regular files and directories")


def safe_extract_tar(tar_path: Path, dest: Path) -> None:
    """Extract into ``dest`` refusing absolute paths, ``..``, links and special files.

    Everything extracted is owner-only: folders 0700, files 0600 (0700 if stored executable).
    """
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    if not dest.parent.is_dir():
        private_dir(dest.parent)
    tmp.mkdir(mode=PRIVATE_DIR_MODE)
    os.chmod(tmp, PRIVATE_DIR_MODE)
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts or not name.parts:
                    raise ValueError(f"unsafe path in artifact tar: {member.name!r}")
                target = tmp.joinpath(*name.parts)
                if member.isdir():
                    private_dir(target)
                elif member.isreg():
                    private_dir(target.parent)
                    source = tar.extractfile(member)
                    assert source is not None  # regular members always have content
                    with source, open_private(target, "wb") as f:
                        shutil.copyfileobj(source, f, _CHUNK)
                    target.chmod(private_file_mode(member.mode))
                else:
                    raise ValueError(f"unsupported entry type in artifact tar: {member.name!r}")
        if dest.exists():
            dest.rmdir()  # checked empty by the caller
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- local directory -------------------------------------------------------------------


class LocalArtifactStore(ArtifactStore):
    """Artifacts as read-only files ``root/sha256/<first 2 hex>/<hex>``.

    Writes go to ``root/tmp`` first, are fsynced and renamed into place, so a crash never
    leaves a partial file under a hash name. Several processes of the same user may share
    ``root``: every put makes ``root`` and the folders under it 0700 and the files 0400, so a
    store written by an older version is closed to other users by its next put.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, *, root: Path | None = None, js: object = None) -> LocalArtifactStore:
        """Constructor for the plugin registry: needs ``root`` (``settings.artifacts_root``)."""
        if root is None:
            raise ValueError("the local artifact store needs a root directory")
        return cls(root)

    def path_for(self, ref: ArtifactRef) -> Path:
        return self.root / "sha256" / ref.sha256[:2] / ref.sha256

    async def put_bytes(self, data: bytes, media_type: str = OCTET_STREAM) -> ArtifactRef:
        return await asyncio.to_thread(self._put_stream, io.BytesIO(data), media_type)

    async def put_file(self, path: Path, media_type: str = OCTET_STREAM) -> ArtifactRef:
        def put() -> ArtifactRef:
            with Path(path).open("rb") as f:
                return self._put_stream(f, media_type)

        return await asyncio.to_thread(put)

    def _put_stream(self, reader: BinaryIO, media_type: str) -> ArtifactRef:
        private_dir(self.root)
        tmp = private_dir(self.root / "tmp") / uuid.uuid4().hex
        h, size = hashlib.sha256(), 0
        try:
            with open_private(tmp, "wb") as out:
                while chunk := reader.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            ref = ArtifactRef(h.hexdigest(), size, media_type)
            final = self.path_for(ref)
            if final.is_file() and _hash_file(final) == (ref.sha256, size):
                return ref  # already stored: content addressing makes puts idempotent
            # absent, or a corrupted copy (bit rot, a hand edit): the rename replaces it
            # atomically, so readers see the old file or the good one, never a mix
            private_dir(final.parent.parent)
            private_dir(final.parent)
            tmp.chmod(STORED_FILE_MODE)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            return ref
        finally:
            tmp.unlink(missing_ok=True)

    async def get_bytes(self, ref: ArtifactRef) -> bytes:
        def read() -> bytes:
            try:
                data = self.path_for(ref).read_bytes()
            except FileNotFoundError:
                raise ArtifactNotFound(ref) from None
            _check(ref, hashlib.sha256(data).hexdigest(), len(data))
            return data

        return await asyncio.to_thread(read)

    async def get_file(self, ref: ArtifactRef, dest: Path) -> Path:
        def copy() -> Path:
            target = Path(dest)
            if not target.parent.is_dir():
                private_dir(target.parent)
            tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
            h, size = hashlib.sha256(), 0
            try:
                try:
                    src = self.path_for(ref).open("rb")
                except FileNotFoundError:
                    raise ArtifactNotFound(ref) from None
                with src, open_private(tmp, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                _check(ref, h.hexdigest(), size)
                os.replace(tmp, target)
                return target
            finally:
                tmp.unlink(missing_ok=True)

        return await asyncio.to_thread(copy)

    async def exists(self, ref: ArtifactRef) -> bool:
        return await asyncio.to_thread(self.path_for(ref).is_file)

    async def delete(self, ref: ArtifactRef) -> bool:
        def remove() -> bool:
            try:
                self.path_for(ref).unlink()
            except FileNotFoundError:
                return False
            return True

        return await asyncio.to_thread(remove)


# --- NATS object store -----------------------------------------------------------------


def _nats_digest(sha256_hex: str) -> str:
    """The digest string the NATS object store records for this sha256."""
    return "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode()


class NatsObjectArtifactStore(ArtifactStore):
    """Artifacts as objects named by their sha256 hex in a JetStream object store bucket.

    The bucket is created on first use. NATS chunks objects (128 KiB), so files stream.
    """

    def __init__(self, js: JetStreamContext, *, bucket: str = ARTIFACTS_BUCKET) -> None:
        self.js = js
        self.bucket = bucket
        self._obs: ObjectStore | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, *, root: Path | None = None, js: JetStreamContext | None = None
    ) -> NatsObjectArtifactStore:
        """Constructor for the plugin registry: needs ``js`` (``bus.js``); ``root`` unused."""
        if js is None:
            raise ValueError("the nats artifact store needs a JetStream context (js=bus.js)")
        return cls(js)

    async def _store(self) -> ObjectStore:
        async with self._lock:
            if self._obs is None:
                try:
                    self._obs = await self.js.object_store(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._obs = await self.js.create_object_store(
                        self.bucket, description="tunewright content-addressed artifacts"
                    )
            return self._obs

    async def _has(self, obs: ObjectStore, sha256_hex: str) -> bool:
        try:
            await obs.get_info(sha256_hex)
        except nats.js.errors.ObjectNotFoundError:
            return False
        return True

    async def put_bytes(self, data: bytes, media_type: str = OCTET_STREAM) -> ArtifactRef:
        ref = ArtifactRef(hashlib.sha256(data).hexdigest(), len(data), media_type)
        obs = await self._store()
        if not await self._has(obs, ref.sha256):
            await obs.put(ref.sha256, data)
        return ref

    async def put_file(self, path: Path, media_type: str = OCTET_STREAM) -> ArtifactRef:
        # the object's name is its hash, so hash first, then stream the upload
        digest, size = await asyncio.to_thread(_hash_file, Path(path))
        ref = ArtifactRef(digest, size, media_type)
        obs = await self._store()
        if await self._has(obs, ref.sha256):
            return ref
        f = await asyncio.to_thread(Path(path).open, "rb")
        with f:
            info = await obs.put(ref.sha256, f)
        if info.digest != _nats_digest(ref.sha256):  # the file changed while we read it
            await obs.delete(ref.sha256)
            raise ArtifactCorrupted(
                ref, actual_sha256=f"(NATS digest {info.digest})", actual_size=info.size or 0
            )
        return ref

    async def get_bytes(self, ref: ArtifactRef) -> bytes:
        obs = await self._store()
        try:
            result = await obs.get(ref.sha256)
        except nats.js.errors.ObjectNotFoundError:
            raise ArtifactNotFound(ref) from None
        except nats.js.errors.DigestMismatchError:
            raise ArtifactCorrupted(
                ref, actual_sha256="(chunk digest mismatch)", actual_size=-1
            ) from None
        data = bytes(result.data or b"")
        _check(ref, hashlib.sha256(data).hexdigest(), len(data))
        return data

    async def get_file(self, ref: ArtifactRef, dest: Path) -> Path:
        obs = await self._store()
        target = Path(dest)
        if not target.parent.is_dir():
            private_dir(target.parent)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
        try:
            with open_private(tmp, "wb") as out:
                try:
                    await obs.get(ref.sha256, writeinto=out)
                except nats.js.errors.ObjectNotFoundError:
                    raise ArtifactNotFound(ref) from None
                except nats.js.errors.DigestMismatchError:
                    raise ArtifactCorrupted(
                        ref, actual_sha256="(chunk digest mismatch)", actual_size=-1
                    ) from None
            digest, size = await asyncio.to_thread(_hash_file, tmp)
            _check(ref, digest, size)
            os.replace(tmp, target)
            return target
        finally:
            tmp.unlink(missing_ok=True)

    async def exists(self, ref: ArtifactRef) -> bool:
        return await self._has(await self._store(), ref.sha256)

    async def delete(self, ref: ArtifactRef) -> bool:
        obs = await self._store()
        try:
            await obs.delete(ref.sha256)
        except nats.js.errors.ObjectNotFoundError:
            return False
        return True


__all__ = [
    "ARTIFACTS_BUCKET",
    "OCTET_STREAM",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "STORED_FILE_MODE",
    "TAR",
    "URI_PREFIX",
    "ArtifactCorrupted",
    "ArtifactNotFound",
    "ArtifactRef",
    "ArtifactStore",
    "LocalArtifactStore",
    "NatsObjectArtifactStore",
    "make_private",
    "open_private",
    "private_dir",
    "safe_extract_tar",
    "write_deterministic_tar",
    "write_private",
]
