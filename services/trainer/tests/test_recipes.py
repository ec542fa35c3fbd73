"""Every training recipe the project shows passes pre-flight on an 80 GB card: the train stages
of ``examples/**/*.yaml`` as they are, and each of them with the README's "same pipeline on a
real model" block (an 8B QLoRA recipe) in place of its model, PEFT, quantization,
hyperparameters and resources, as the README tells readers to do.

The README's ``hf:`` folder does not exist here: the test writes a Llama-3.1-8B ``config.json``
(the parameter count comes from it, as for a real download), a tokenizer config with a chat
template and an empty ``*.safetensors`` into a temporary folder and points the recipe there.
Each spec goes the way a pipeline stage goes: proto JSON (``ParseDict``), ``spec_from_pb``,
``preflight``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from tunewright.core.artifacts import ArtifactRef
from tunewright.core.plugins import PluginManager, Registries
from tunewright.trainer import convert
from tunewright.trainer.jobs import JobSpec
from tunewright.trainer.preflight import DatasetInfo, preflight
from tunewright.trainer.v1 import trainer_pb2

ROOT = Path(__file__).resolve().parents[3]
CARD_BYTES = 80 * 10**9  # an 80 GB A100 / H100
REF = re.compile(r"\$\{[^}]+\}")
# meta-llama/Llama-3.1-8B-Instruct config.json, the fields the parameter count reads
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
_EOS = "<|eot_id|>"
_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


_PARENT_STAGE = re.compile(r"\$\{stages\.([\w-]+)\.model_version_id\}")


def train_stages() -> list[tuple[str, dict[str, Any]]]:
    """``(where, spec)`` of every train stage in examples/**/*.yaml. A stage that leaves
    ``base_model`` / ``seed`` to its parent stage gets them from it, as the trainer does."""
    out = []
    for file in sorted((ROOT / "examples").rglob("*.yaml")):
        doc = yaml.safe_load(file.read_text())
        if not isinstance(doc, dict):
            continue
        specs: dict[str, dict[str, Any]] = {}
        for stage in doc.get("stages") or []:
            if stage.get("kind") == "train":
                spec = dict(stage["spec"])
                parent = _PARENT_STAGE.fullmatch(str(spec.get("parent_model", {}).get("id", "")))
                if parent and parent.group(1) in specs:
                    for inherited in ("base_model", "seed"):
                        if inherited in specs[parent.group(1)]:
                            spec.setdefault(inherited, specs[parent.group(1)][inherited])
                specs[stage["name"]] = spec
                out.append((f"{file.relative_to(ROOT)}:{stage['name']}", spec))
    return out


def readme_overrides() -> list[dict[str, Any]]:
    """The README's YAML blocks that set a training stage's model (``base_model:``)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    found = [yaml.safe_load(textwrap.dedent(b)) for b in blocks if "base_model:" in b]
    return [b for b in found if isinstance(b, dict)]


def recipes() -> list[tuple[str, dict[str, Any]]]:
    stages = train_stages()
    out = list(stages)
    for i, override in enumerate(readme_overrides()):
        out += [(f"README.md[{i}] in {where}", {**spec, **override}) for where, spec in stages]
    return out


def test_the_recipes_are_found() -> None:
    names = [where for where, _ in recipes()]
    assert any(n.startswith("examples/support-tickets/pipeline.yaml:sft") for n in names)
    assert any(
        n.startswith("README.md[0] in examples/support-tickets/pipeline.yaml:dpo") for n in names
    )
    assert any("QUANTIZATION_BITS_4" in json.dumps(spec) for _, spec in recipes())


class _Datasets:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def resolve(self, dataset_id: str) -> DatasetInfo:
        return DatasetInfo(dataset_id, self.kind, ArtifactRef("0" * 64))


class _Models:
    def model_output(self, model_version_id: str) -> ArtifactRef:
        return ArtifactRef("1" * 64)


def _local_hf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "Llama-3.1-8B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_31_8B))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": _EOS, "chat_template": _TEMPLATE})
    )
    (folder / "model.safetensors").write_bytes(b"")  # pre-flight only looks for the file
    return folder


@pytest.fixture(scope="module")
def registries() -> Registries:
    return PluginManager().load()


def _job_spec(raw: dict[str, Any], tmp_path: Path) -> JobSpec:
    text = REF.sub("ref", json.dumps(raw))  # ${stages.*} / ${params.*}: any id resolves here
    spec_dict = json.loads(text)
    base = spec_dict["base_model"]
    if base.startswith("hf:") and not Path(base[3:]).is_dir():
        spec_dict["base_model"] = f"hf:{_local_hf_folder(tmp_path)}"
    pb = json_format.ParseDict(spec_dict, trainer_pb2.TrainingJobSpec())
    return dataclasses.replace(convert.spec_from_pb(pb), memory_limit_bytes=CARD_BYTES)


@pytest.mark.parametrize(("where", "raw"), recipes(), ids=[w for w, _ in recipes()])
def test_recipe_passes_preflight_on_an_80gb_card(
    registries: Registries, tmp_path: Path, where: str, raw: dict[str, Any]
) -> None:
    spec = _job_spec(raw, tmp_path)
    kind = sorted(registries.training_methods.get(spec.method).dataset_kinds)[0]
    result = asyncio.run(
        preflight(
            spec,
            registries=registries,
            datasets=_Datasets(kind),
            models=_Models(),
            default_checkpoint_every=50,
        )
    )
    assert result.valid, (where, result.violations)
    assert 0 < result.estimated_memory_bytes <= CARD_BYTES


def test_hyperparameters_are_checked_by_name_and_value(
    registries: Registries, tmp_path: Path
) -> None:
    stage = dict(train_stages())["examples/support-tickets/pipeline.yaml:sft"]
    spec = dataclasses.replace(
        _job_spec(stage, tmp_path),
        hyperparameters={"warmup": 0.1, "precision": "fp64", "attn_implementation": "flash"},
    )
    result = asyncio.run(
        preflight(
            spec,
            registries=registries,
            datasets=_Datasets("sft"),
            models=_Models(),
            default_checkpoint_every=50,
        )
    )
    fields = dict(result.violations)
    assert fields["spec.hyperparameters.warmup"].startswith("unknown hyperparameter; method sft")
    assert "precision" in fields["spec.hyperparameters.warmup"]  # the known names are listed
    assert fields["spec.hyperparameters.precision"] == (
        "must be one of auto, fp32, bf16, fp16; got 'fp64'"
    )
    assert "spec.hyperparameters.attn_implementation" in fields
