"""Which model versions the vllm backend serves, and the clear refusals of the others."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tunewright_vllm.adapters import adapter_for, adapter_name, lora_rank_for

from tunewright.core.errors import FailedPrecondition
from tunewright.core.model_versions import TrainedChain

TrainFolder = Callable[..., Path]
MakeChain = Callable[..., TrainedChain]


def test_a_single_lora_version_on_an_hf_folder_is_one_adapter(
    base_folder: Path, trained: TrainFolder, make_chain: MakeChain
) -> None:
    folder = trained("mv_01JDSFT", r=32)
    adapter = adapter_for(make_chain("mv_01JDSFT", base_folder, folder))
    assert adapter.name == "mv_01JDSFT"
    assert adapter.path == folder / "model"
    assert adapter.rank == 32
    assert adapter.base == base_folder


def _refusal(chain: TrainedChain) -> FailedPrecondition:
    with pytest.raises(FailedPrecondition) as info:
        adapter_for(chain)
    return info.value


def test_a_tiny_base_is_refused(trained: TrainFolder, make_chain: MakeChain) -> None:
    error = _refusal(make_chain("mv_t", "tiny:llama-xs", trained("mv_t")))
    assert error.reason == "VLLM_BASE_NOT_HF"
    assert "only hf:<folder> bases" in error.message and "transformers backend" in error.message


def test_an_hf_base_that_is_no_local_folder_is_refused(
    trained: TrainFolder, make_chain: MakeChain, tmp_path: Path
) -> None:
    error = _refusal(make_chain("mv_h", "hf:Qwen/Qwen2.5-7B", trained("mv_h")))
    assert error.reason == "VLLM_BASE_NOT_FOUND"


def test_a_full_weights_folder_is_refused(
    base_folder: Path, trained: TrainFolder, make_chain: MakeChain
) -> None:
    error = _refusal(make_chain("mv_f", base_folder, trained("mv_f", lora=False)))
    assert error.reason == "VLLM_FULL_WEIGHTS"
    assert "full weights, not a LoRA adapter" in error.message
    # also as the root of a chain
    root = trained("mv_root", lora=False)
    error = _refusal(make_chain("mv_dpo", base_folder, root, trained("mv_dpo")))
    assert error.reason == "VLLM_FULL_WEIGHTS"


def test_stacked_lora_adapters_are_refused_with_the_export_workaround(
    base_folder: Path, trained: TrainFolder, make_chain: MakeChain
) -> None:
    sft, dpo = trained("mv_sft"), trained("mv_dpo")
    error = _refusal(make_chain("mv_dpo", base_folder, sft, dpo))
    assert error.reason == "VLLM_STACKED_ADAPTERS"
    assert "stacks 2 LoRA adapters (mv_sft -> mv_dpo" in error.message
    assert "`tunewright export mv_dpo --merged DIR`" in error.message
    assert "hf:DIR" in error.message


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"task_type": "SEQ_CLS", "modules_to_save": ["score"]}, "VLLM_NOT_CAUSAL_LM"),
        ({"modules_to_save": ["lm_head"]}, "VLLM_ADAPTER_UNSUPPORTED"),
        ({"use_dora": True}, "VLLM_ADAPTER_UNSUPPORTED"),
        ({"r": 1024}, "VLLM_LORA_RANK_UNSUPPORTED"),
        ({"r": "16"}, "VLLM_BAD_ADAPTER"),
    ],
)
def test_adapters_vllm_cannot_load_are_refused(
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    extra: dict[str, object],
    reason: str,
) -> None:
    folder = trained("mv_x", **extra)
    assert _refusal(make_chain("mv_x", base_folder, folder)).reason == reason


def test_an_unreadable_adapter_config_is_refused(
    base_folder: Path, trained: TrainFolder, make_chain: MakeChain
) -> None:
    folder = trained("mv_x")
    (folder / "model" / "adapter_config.json").write_text("{not json")
    assert _refusal(make_chain("mv_x", base_folder, folder)).reason == "VLLM_BAD_ADAPTER"


def test_a_version_with_another_chat_template_is_refused(
    base_folder: Path, trained: TrainFolder, make_chain: MakeChain
) -> None:
    folder = trained("mv_c", template="{{ messages }}")
    error = _refusal(make_chain("mv_c", base_folder, folder))
    assert error.reason == "VLLM_CHAT_TEMPLATE_MISMATCH"
    # the same template in chat_template.jinja (newer transformers) is the same template
    other = trained("mv_j")
    (other / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    template = json.loads((base_folder / "tokenizer_config.json").read_text())["chat_template"]
    (other / "tokenizer" / "chat_template.jinja").write_text(template)
    assert adapter_for(make_chain("mv_j", base_folder, other)).name == "mv_j"


@pytest.mark.parametrize(
    "mv",
    ["mv_01JD5Q3ZK8", "mv-1.2", "A" * 64],
)
def test_safe_ids_are_their_own_adapter_name(mv: str) -> None:
    assert adapter_name(mv) == mv


@pytest.mark.parametrize(
    "mv",
    ["mv 1", "org/model=v2", "a,b", "../etc", "ünï", "x" * 65, "-leading", "=", "mv_a b"],
)
def test_unsafe_ids_are_sanitised_and_stay_distinct(mv: str) -> None:
    name = adapter_name(mv)
    assert name != mv
    assert len(name) <= 64
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    assert not name.startswith(("-", ".", "_"))
    assert adapter_name(mv) == name  # stable
    # ids that sanitise alike still differ
    assert adapter_name("mv a") != adapter_name("mv/a") != adapter_name("mv_a")


def test_lora_rank_for_rounds_up_to_vllm_ranks() -> None:
    assert [lora_rank_for(r) for r in (1, 2, 8, 9, 64, 256, 257, 512)] == [
        1,
        8,
        8,
        16,
        64,
        256,
        320,
        512,
    ]
    with pytest.raises(ValueError, match="above vLLM's largest"):
        lora_rank_for(513)
