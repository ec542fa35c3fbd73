"""The same suite for every artifact store backend (the NATS one on a real nats-server)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from tunewright.core.artifacts import (
    ARTIFACTS_BUCKET,
    TAR,
    ArtifactCorrupted,
    ArtifactNotFound,
    ArtifactRef,
    ArtifactStore,
    LocalArtifactStore,
    NatsObjectArtifactStore,
    make_private,
    open_private,
    private_dir,
    write_private,
)
from tunewright.core.nats_server import NatsServer

MiB = 1024 * 1024


@pytest.fixture(params=["local", "nats"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArtifactStore]:
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "store")
        return
    server: NatsServer = request.getfixturevalue("nats_server")
    nc = await nats.connect(server.url)
    try:
        yield NatsObjectArtifactStore(nc.jetstream())
    finally:
        await nc.close()


async def corrupt(store: ArtifactStore, ref: ArtifactRef, data: bytes) -> None:
    """Replace what is stored under ``ref`` with other bytes, behind the store's back."""
    if isinstance(store, LocalArtifactStore):
        path = store.path_for(ref)
        path.chmod(0o644)
        path.write_bytes(data)
    else:
        assert isinstance(store, NatsObjectArtifactStore)
        obs = await store.js.object_store(ARTIFACTS_BUCKET)
        await obs.put(ref.sha256, data)


def make_adapter_dir(root: Path) -> Path:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "adapter_config.json").write_text('{"r": 8}')
    (root / "adapter_model.safetensors").write_bytes(os.urandom(10_000))
    (root / "nested" / "deeper" / "notes.txt").write_text("hello")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


async def test_bytes_round_trip_is_idempotent_and_deletable(store: ArtifactStore) -> None:
    ref = await store.put_bytes(b"hello", "text/plain")
    assert ref == ArtifactRef(hashlib.sha256(b"hello").hexdigest(), 5, "text/plain")
    assert ref.uri == f"tw-artifact:sha256:{ref.sha256}"
    assert await store.put_bytes(b"hello", "text/plain") == ref
    assert await store.exists(ref)
    assert await store.get_bytes(ref) == b"hello"
    # a reference parsed from its URI (size unknown) reads the same content
    assert await store.get_bytes(ArtifactRef.from_uri(ref.uri)) == b"hello"

    assert await store.delete(ref)
    assert not await store.exists(ref)
    assert not await store.delete(ref)
    with pytest.raises(ArtifactNotFound):
        await store.get_bytes(ref)


async def test_empty_content(store: ArtifactStore) -> None:
    ref = await store.put_bytes(b"")
    assert ref.size_bytes == 0
    assert await store.get_bytes(ref) == b""


async def test_5_mib_file_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(5 * MiB + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    ref = await store.put_file(src, "application/vnd.apache.parquet")
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size_bytes == len(data)
    assert (await store.put_bytes(data)).sha256 == ref.sha256

    out = await store.get_file(ref, tmp_path / "out" / "big.bin")
    assert out.read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == ["big.bin"]  # no temp files left


async def test_folder_round_trip_is_deterministic(store: ArtifactStore, tmp_path: Path) -> None:
    a = make_adapter_dir(tmp_path / "a")
    ref = await store.put_dir(a)
    assert ref.media_type == TAR

    # the same content elsewhere, created later (other mtimes): same hash
    b = tmp_path / "b"
    b.mkdir()
    for rel, content in tree(a).items():
        if content is None:
            (b / rel).mkdir(parents=True, exist_ok=True)
        else:
            (b / rel).parent.mkdir(parents=True, exist_ok=True)
            (b / rel).write_bytes(content)
    (b / "run.sh").chmod(0o755)
    os.utime(b / "adapter_config.json", (1, 1))
    assert (await store.put_dir(b)).sha256 == ref.sha256

    out = await store.get_dir(ref, tmp_path / "restored")
    assert tree(out) == tree(a)
    assert os.access(out / "run.sh", os.X_OK)
    with pytest.raises(FileExistsError):
        await store.get_dir(ref, out)


async def test_corrupted_content_is_detected_on_every_read(
    store: ArtifactStore, tmp_path: Path
) -> None:
    ref = await store.put_bytes(b"the real adapter")
    await corrupt(store, ref, b"something else")
    with pytest.raises(ArtifactCorrupted) as caught:
        await store.get_bytes(ref)
    assert caught.value.expected == ref.sha256
    assert caught.value.actual == hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "out.bin"
    with pytest.raises(ArtifactCorrupted):
        await store.get_file(ref, dest)
    assert not dest.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.bin.tmp")]


async def test_local_put_repairs_a_corrupted_copy_of_the_same_size(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = await store.put_bytes(b"the real adapter")
    path = store.path_for(ref)
    await corrupt(store, ref, b"the fake adapter")  # same size: a size check would skip it
    inode = path.stat().st_ino
    assert await store.put_bytes(b"the real adapter") == ref
    assert await store.get_bytes(ref) == b"the real adapter"
    assert path.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert path.stat().st_mode & 0o777 == 0o400
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    # an intact copy is left alone
    inode = path.stat().st_ino
    await store.put_bytes(b"the real adapter")
    assert path.stat().st_ino == inode


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: modes must not depend on the one the process inherited."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def group_or_other_bits(root: Path) -> dict[str, str]:
    """Every path under (and including) ``root`` whose mode lets group or others in."""
    paths = [root, *root.rglob("*")]
    return {
        str(p.relative_to(root)): oct(stat.S_IMODE(p.lstat().st_mode))
        for p in paths
        if p.lstat().st_mode & 0o077
    }


@pytest.mark.usefixtures("open_umask")
async def test_what_a_store_writes_is_owner_only(store: ArtifactStore, tmp_path: Path) -> None:
    ref = await store.put_bytes(b"training rows")
    dir_ref = await store.put_dir(make_adapter_dir(tmp_path / "adapter"))
    out = tmp_path / "out"
    await store.get_file(ref, out / "data" / "train.jsonl")
    await store.get_dir(dir_ref, out / "parent")
    assert group_or_other_bits(out) == {}
    assert stat.S_IMODE((out / "data" / "train.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "parent" / "run.sh").stat().st_mode) == 0o700  # kept executable
    if isinstance(store, LocalArtifactStore):
        assert group_or_other_bits(store.root) == {}
        assert stat.S_IMODE(store.path_for(ref).stat().st_mode) == 0o400
        assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


@pytest.mark.usefixtures("open_umask")
async def test_a_store_made_by_an_older_version_is_closed_by_the_next_put(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    (root / "tmp").mkdir(parents=True, mode=0o755)
    store = LocalArtifactStore(root)
    await store.put_bytes(b"x")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o700


@pytest.mark.usefixtures("open_umask")
def test_private_helpers_ignore_the_umask(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700  # parents made here too
    write_private(folder / "plan.json", "{}")
    with open_private(folder / "child.log", "ab") as log:
        log.write(b"1\n")
    with open_private(folder / "child.log", "a") as log:
        log.write("2\n")
    assert (folder / "child.log").read_text() == "1\n2\n"
    assert group_or_other_bits(tmp_path / "a") == {}
    # a tree another library wrote with the open umask (save_pretrained, checkpoints)
    third = tmp_path / "third"
    (third / "checkpoint-1").mkdir(parents=True)
    (third / "checkpoint-1" / "model.safetensors").write_bytes(b"w")
    (third / "run.sh").write_text("#!/bin/sh\n")
    (third / "run.sh").chmod(0o775)
    (third / "link").symlink_to("/etc/passwd")
    assert group_or_other_bits(third) != {}
    make_private(third)
    assert set(group_or_other_bits(third)) == {"link"}  # symlinks are not followed
    assert stat.S_IMODE((third / "run.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE(Path("/etc/passwd").stat().st_mode) == 0o644
    with pytest.raises(NotADirectoryError):
        private_dir(folder / "plan.json")
    with pytest.raises(ValueError, match="writes only"):
        open_private(folder / "x", "rb")


async def test_missing_artifact(store: ArtifactStore, tmp_path: Path) -> None:
    ref = ArtifactRef(hashlib.sha256(b"never stored").hexdigest())
    assert not await store.exists(ref)
    with pytest.raises(ArtifactNotFound):
        await store.get_bytes(ref)
    with pytest.raises(ArtifactNotFound):
        await store.get_file(ref, tmp_path / "x")
    with pytest.raises(ArtifactNotFound):
        await store.get_dir(ref, tmp_path / "d")


@pytest.mark.parametrize("bad_name", ["../escape.txt", "/etc/evil", "a/../../escape.txt"])
async def test_unsafe_tar_is_refused(store: ArtifactStore, tmp_path: Path, bad_name: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(bad_name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    ref = await store.put_bytes(buf.getvalue(), TAR)
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(ValueError, match="unsafe path"):
        await store.get_dir(ref, dest)
    assert not dest.exists()
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert list((tmp_path / "deep").iterdir()) == []


async def test_symlinks_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to("/etc/passwd")
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(ValueError, match="only regular files"):
        await store.put_dir(src)


def test_ref_parsing() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    ref = ArtifactRef.from_uri(f"tw-artifact:sha256:{digest}", size_bytes=1, media_type="a/b")
    assert ref == ArtifactRef(digest, 1, "a/b")
    assert str(ref) == ref.uri
    with pytest.raises(ValueError, match="not an artifact URI"):
        ArtifactRef.from_uri(f"s3://bucket/{digest}")
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ArtifactRef(digest.upper())


async def test_from_settings(tmp_path: Path, nats_server: NatsServer) -> None:
    local = LocalArtifactStore.from_settings(root=tmp_path / "r")
    assert (await local.put_bytes(b"a")).size_bytes == 1
    with pytest.raises(ValueError, match="root"):
        LocalArtifactStore.from_settings()
    nc = await nats.connect(nats_server.url)
    try:
        remote = NatsObjectArtifactStore.from_settings(js=nc.jetstream())
        assert await remote.get_bytes(await remote.put_bytes(b"a")) == b"a"
    finally:
        await nc.close()
    with pytest.raises(ValueError, match="JetStream"):
        NatsObjectArtifactStore.from_settings(root=tmp_path)
