"""The ``transformers`` serving backend against the evaluator's own path
(:class:`tunewright_trl.generation.LocalGenerator`, which merges every adapter of a chain into
the base): the same greedy answers for one adapter and for a two-adapter chain (DPO on its
SFT parent) while requests of several versions are interleaved; stop sequences, token
budgets, the adapter LRU, a full queue and a client that goes away."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from trained_adapters import ANSWERS, QUESTION, train_adapter
from tunewright_trl.generation import LocalGenerator
from tunewright_trl.serving import TransformersBackend

from tunewright.core.errors import ResourceExhausted
from tunewright.core.model_versions import TrainedChain
from tunewright.core.plugins import PluginManager
from tunewright.core.serving import GenerationRequest, SamplingOptions

os.environ.setdefault("OMP_NUM_THREADS", "1")

ASK = [{"role": "user", "content": QUESTION}]


def _noise(folder: Path) -> Path:
    """An adapter with random weights: it never says EOS, so it runs to its budget."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tunewright_trl.models import TinyBaseModel

    base = TinyBaseModel("llama-xxs", seed=0, corpus=[QUESTION, *ANSWERS.values()])
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(base.causal_lm(), config).save_pretrained(str(folder / "model"))
    base.tokenizer().save_pretrained(str(folder / "tokenizer"))
    return folder


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedChain]:
    root = tmp_path_factory.mktemp("adapters")
    refund = train_adapter(ANSWERS["refund"], root / "mv_refund")
    ships = train_adapter(ANSWERS["ships"], root / "mv_ships")
    # trained on refund merged into the base (DPO after SFT): served as both adapters at once
    escalate = train_adapter(ANSWERS["escalate"], root / "mv_escalate", parent=refund)
    return {
        "noise": TrainedChain("mv_noise", "tiny:llama-xxs", 0, (_noise(root / "mv_noise"),)),
        "refund": TrainedChain("mv_refund", "tiny:llama-xxs", 0, (refund,)),
        "ships": TrainedChain("mv_ships", "tiny:llama-xxs", 0, (ships,)),
        "escalate": TrainedChain("mv_escalate", "tiny:llama-xxs", 0, (refund, escalate)),
    }


@pytest.fixture(scope="module")
def base_models() -> object:
    return PluginManager().load().base_models


def _request(chain: TrainedChain, **options: object) -> GenerationRequest:
    settings: dict[str, object] = {"max_tokens": 16, "temperature": 0.0, **options}
    return GenerationRequest(chain=chain, options=SamplingOptions(**settings), messages=ASK)  # type: ignore[arg-type]


async def _answer(backend: TransformersBackend, request: GenerationRequest) -> tuple[str, object]:
    text, last = "", None
    async for delta in backend.generate(request):
        text += delta.text
        last = delta
    return text, last


async def test_answers_equal_the_merged_model_for_adapters_and_chains_interleaved(
    chains: dict[str, TrainedChain], base_models: object
) -> None:
    reference = {
        name: LocalGenerator().generate(
            **chain.generator_inputs(base_models),  # type: ignore[arg-type]
            prompts=[ASK],
            max_new_tokens=16,
        )[0][0]
        for name, chain in chains.items()
        if name != "noise"
    }
    # the evaluator's merged models say what each version was trained to say
    assert reference == {name: ANSWERS[name] for name in reference}
    backend = TransformersBackend(base_models=base_models)  # type: ignore[arg-type]
    try:
        order = ["refund", "ships", "escalate", "refund", "escalate", "ships", "ships", "refund"]
        replies = await asyncio.gather(*[_answer(backend, _request(chains[n])) for n in order])
        for name, (text, last) in zip(order, replies, strict=True):
            assert text.strip() == reference[name], name
            assert last.finish_reason == "stop"  # type: ignore[attr-defined]
        assert backend.batches < len(order)  # requests of one version shared forward passes
        assert set(backend.loaded()) == {"mv_refund", "mv_ships", "mv_escalate"}
    finally:
        await backend.close()


async def test_stop_sequences_budget_and_the_adapter_lru(
    chains: dict[str, TrainedChain], base_models: object
) -> None:
    backend = TransformersBackend(base_models=base_models, max_adapters=1)  # type: ignore[arg-type]
    try:
        full, _ = await _answer(backend, _request(chains["refund"]))
        cut, last = await _answer(backend, _request(chains["refund"], stop=(" duplicate",)))
        assert cut.strip() == "Refund issued for the"
        assert last.finish_reason == "stop"  # type: ignore[attr-defined]
        short, last = await _answer(backend, _request(chains["refund"], max_tokens=3))
        assert last.completion_tokens == 3 and last.finish_reason == "length"  # type: ignore[attr-defined]
        assert full.startswith(short)

        await _answer(backend, _request(chains["ships"]))
        assert backend.loaded() == ["mv_ships"]  # one adapter kept: refund was dropped
        again, _ = await _answer(backend, _request(chains["refund"]))
        assert again == full and backend.loaded() == ["mv_refund"]
    finally:
        await backend.close()


async def test_a_full_queue_is_refused_and_a_client_that_leaves_frees_its_row(
    chains: dict[str, TrainedChain], base_models: object
) -> None:
    backend = TransformersBackend(base_models=base_models, max_queued=1)  # type: ignore[arg-type]
    try:
        await backend.prepare(chains["noise"])
        running = backend.generate(_request(chains["noise"], max_tokens=200))
        await anext(running)
        waiting = asyncio.create_task(_answer(backend, _request(chains["ships"])))
        await asyncio.sleep(0.05)
        with pytest.raises(ResourceExhausted):
            await anext(backend.generate(_request(chains["refund"])))
        await running.aclose()  # the client went away mid-answer: its row stops
        text, _ = await asyncio.wait_for(waiting, 60)
        assert text.strip() == ANSWERS["ships"]
    finally:
        await backend.close()
