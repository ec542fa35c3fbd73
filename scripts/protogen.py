"""Generate the Python stubs for protos/ into the core distribution (``make proto``).

protoc (from grpcio-tools) writes ``*_pb2.py``, ``*_pb2_grpc.py`` and mypy-protobuf ``.pyi``
files to ``libs/tunewright-core/src/tunewright/<domain>/v1/``. ``--check`` regenerates into a
temporary directory and fails when the committed stubs differ (CI runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "libs" / "tunewright-core" / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("tunewright/**/*.proto"))


def generate(out: Path) -> None:
    bin_dir = Path(sys.executable).parent
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTOS}", f"-I{wkt}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}", f"--mypy_grpc_out=quiet:{out}",
        *proto_files(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=PROTOS, env=env)


def generated_files(base: Path) -> dict[str, Path]:
    files = {}
    for path in base.glob("tunewright/*/v1/*"):
        if path.name.endswith(GENERATED_SUFFIXES):
            files[str(path.relative_to(base))] = path
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    args = parser.parse_args()
    if not args.check:
        for path in generated_files(OUT).values():
            path.unlink()
        generate(OUT)
        print(f"generated {len(generated_files(OUT))} files from {len(proto_files())} protos")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generated_files(_generate_into(Path(tmp)))
        committed = generated_files(OUT)
        stale = sorted(
            name
            for name in fresh.keys() | committed.keys()
            if name not in fresh
            or name not in committed
            or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )
    if stale:
        print("generated stubs are stale; run `make proto` and commit:", *stale, sep="\n  ")
        return 1
    print(f"stubs up to date ({len(committed)} files)")
    return 0


def _generate_into(tmp: Path) -> Path:
    generate(tmp)
    return tmp


if __name__ == "__main__":
    sys.exit(main())
