"""`tunewright export` against a real registry (in-process, real gRPC and nats-server) and the
artifact store the services use (the local one; the NATS object store for one export): a DPO version trained on an SFT version, promoted to
``support-bot:production``, is exported by alias as a merged checkpoint that plain
transformers loads with the chain's logits, and by id as one LoRA adapter that reproduces
them; a non-empty folder is refused unless --force (which replaces it), a chain with full weights
has no adapter, an unknown alias is an error.

The trained folders are built here (tiny base, LoRA adapters with random weights, as the
trainer saves them) instead of training, to stay fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import LocalArtifactStore, NatsObjectArtifactStore
from tunewright.core.bus import EventBus
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import NatsSettings, load_settings
from tunewright.registry.server import DEFINITION
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

os.environ.setdefault("OMP_NUM_THREADS", "1")
TW = str(Path(sys.executable).parent / "tunewright")
SEED = 5


@pytest.fixture
async def registry(nats_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:  # type: ignore[type-arg]
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path / "data",
    )
    running = await start_service(DEFINITION, settings)
    yield running
    await running.stop()


async def _tw(*args: str, cwd: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TW_")}
    env |= {"COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    proc = await asyncio.create_subprocess_exec(
        TW,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


def _trained_folders(root: Path) -> dict[str, Path]:
    """sft (LoRA on the base), dpo (LoRA on base + sft), full (weights), on-full (LoRA)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tunewright_trl.generation import load_causal_lm
    from tunewright_trl.models import TinyBaseModel

    base = TinyBaseModel("llama-xxs", seed=SEED)
    folders = {name: root / name for name in ("sft", "dpo", "full", "on-full")}

    def lora(model: Any, name: str, **config: Any) -> None:
        torch.manual_seed(len(name))
        peft_config = LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **config)
        get_peft_model(model, peft_config).save_pretrained(str(folders[name] / "model"))

    lora(base.causal_lm(), "sft", r=8, lora_alpha=16, target_modules="all-linear")
    lora(
        load_causal_lm(base, [folders["sft"]]),
        "dpo",
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
    )
    full = base.causal_lm()
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.02 * torch.randn_like(p))
    full.save_pretrained(str(folders["full"] / "model"))
    lora(
        load_causal_lm(base, [folders["full"]]),
        "on-full",
        r=4,
        lora_alpha=8,
        target_modules=["q_proj"],
    )
    for folder in folders.values():
        base.tokenizer().save_pretrained(str(folder / "tokenizer"))
    return folders


async def _register(
    stub: Any, store: LocalArtifactStore, folder: Path, method: str, parent: str = ""
) -> registry_pb2.ModelVersion:
    weights = await store.put_dir(folder)
    reply = await stub.RegisterModelVersion(
        registry_pb2.RegisterModelVersionRequest(
            model_version=registry_pb2.ModelVersion(
                model="support-bot",
                base_model="tiny:llama-xxs",
                method=method,
                parent_model_version_id=parent,
                weights=common_pb2.ArtifactRef(
                    uri=weights.uri,
                    size_bytes=weights.size_bytes or 0,
                    media_type=weights.media_type,
                ),
                labels={"seed": str(SEED)},
            )
        )
    )
    return reply.model_version  # type: ignore[no-any-return]


def _logits(model: Any) -> Any:
    import torch
    from tunewright_trl.models import TinyBaseModel

    tok = TinyBaseModel("llama-xxs", seed=SEED).tokenizer()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "my order is late"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits


async def test_export_merged_by_alias_and_adapter_by_id(
    registry: RunningService,  # type: ignore[type-arg]
    nats_url: str,
    tmp_path: Path,
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tunewright_trl.generation import load_causal_lm
    from tunewright_trl.models import TinyBaseModel

    folders = await asyncio.to_thread(_trained_folders, tmp_path / "trained")
    store = LocalArtifactStore(registry.context.settings.artifacts_root)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        sft = await _register(stub, store, folders["sft"], "sft")
        dpo = await _register(stub, store, folders["dpo"], "dpo", sft.id)
        full = await _register(stub, store, folders["full"], "sft")
        on_full = await _register(stub, store, folders["on-full"], "dpo", full.id)
        await stub.Promote(
            registry_pb2.PromoteRequest(
                model_version_id=dpo.id, alias="production", force=True, reason="export test"
            )
        )
    # the same content in a NATS object store, for a CLI configured with artifacts.backend nats
    bus = await EventBus.from_settings(NatsSettings(url=nats_url), name="test-export")
    try:
        await NatsObjectArtifactStore(bus.js).put_dir(folders["sft"])
    finally:
        await bus.close()
    (tmp_path / "nats.yaml").write_text("artifacts: {backend: nats}\n")
    where = ["--registry", f"127.0.0.1:{registry.port}", "--data-dir", str(tmp_path / "data")]

    out = tmp_path / "out"
    merged_dir, adapter_dir, kept, replaced_dir = (
        out / name for name in ("merged", "adapter", "kept", "replaced")
    )
    for stale in (kept, replaced_dir):  # an earlier export's leftovers
        stale.mkdir(parents=True)
        (stale / "model.safetensors").write_bytes(b"stale")
    # the two exports, the refusals and the replacement, side by side
    (
        (rc_m, out_m),
        (rc_a, out_a),
        (rc_kept, out_kept),
        (rc_full, out_full),
        (rc_replaced, out_replaced),
        (rc_unknown, out_unknown),
        (rc_nats, out_nats),
    ) = await asyncio.gather(
        _tw("export", "support-bot:production", "--merged", str(merged_dir), *where, cwd=tmp_path),
        _tw("export", dpo.id, "--adapter", str(adapter_dir), *where, cwd=tmp_path),
        _tw("export", dpo.id, "--merged", str(kept), *where, cwd=tmp_path),
        _tw("export", on_full.id, "--adapter", str(out / "none"), *where, cwd=tmp_path),
        _tw("export", sft.id, "--adapter", str(replaced_dir), "--force", *where, cwd=tmp_path),
        _tw("export", "support-bot:staging", "--merged", str(out / "x"), *where, cwd=tmp_path),
        _tw(
            "export",
            sft.id,
            "--adapter",
            str(out / "nats"),
            *where,
            "--config",
            "nats.yaml",
            "--nats-url",
            nats_url,
            cwd=tmp_path,
        ),
    )
    assert rc_m == 0, out_m
    assert rc_a == 0, out_a
    assert dpo.id in out_m and "AutoModelForCausalLM.from_pretrained" in out_m

    manifest = json.loads((merged_dir / "tunewright-export.json").read_text())
    assert manifest["model_version_id"] == dpo.id
    assert manifest["requested"] == "support-bot:production"
    assert manifest["aliases"] == ["production"]
    assert (manifest["base_model"], manifest["seed"]) == ("tiny:llama-xxs", SEED)
    assert manifest["chain"] == [sft.id, dpo.id]
    assert [link["weights"] for link in manifest["links"]] == ["lora", "lora"]
    assert [link["method"] for link in manifest["links"]] == ["sft", "dpo"]

    chain = load_causal_lm(TinyBaseModel("llama-xxs", seed=SEED), [folders["sft"], folders["dpo"]])
    expected = _logits(chain)
    plain = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    assert AutoTokenizer.from_pretrained(str(merged_dir)).eos_token == "<|im_end|>"
    assert (_logits(plain) - expected).abs().max().item() == 0.0

    adapter = json.loads((adapter_dir / "tunewright-export.json").read_text())
    assert adapter["format"] == "adapter" and adapter["adapter"]["r"] == 12
    adapted = PeftModel.from_pretrained(
        TinyBaseModel("llama-xxs", seed=SEED).causal_lm(), str(adapter_dir)
    ).eval()
    assert (_logits(adapted) - expected).abs().max().item() < 1e-5

    # a non-empty folder is kept unless --force, which replaces it (nothing stale is left)
    assert rc_kept == 1 and "not empty" in out_kept and "--force" in out_kept
    assert (kept / "model.safetensors").read_bytes() == b"stale"
    assert rc_replaced == 0, out_replaced
    assert not (replaced_dir / "model.safetensors").exists()
    replaced = json.loads((replaced_dir / "tunewright-export.json").read_text())
    assert (replaced["chain"], replaced["adapter"]["combined"]) == ([sft.id], "copied")
    assert (replaced_dir / "adapter_model.safetensors").read_bytes() == (
        folders["sft"] / "model" / "adapter_model.safetensors"
    ).read_bytes()
    # a chain with full weights has no adapter; an unknown alias is an error
    assert rc_full == 1 and "full weights" in out_full and "--merged" in out_full
    assert rc_unknown == 1 and "not found" in out_unknown, out_unknown
    assert not (out / "none").exists() and not (out / "x").exists()
    # the weights from the NATS object store
    assert rc_nats == 0, out_nats
    assert (out / "nats" / "adapter_model.safetensors").read_bytes() == (
        folders["sft"] / "model" / "adapter_model.safetensors"
    ).read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_model_references_and_destinations(tmp_path: Path) -> None:
    from tunewright.cli.export import ExportError, check_destination, parse_model_ref

    assert parse_model_ref("support-bot:production") == common_pb2.ModelVersionRef(
        model="support-bot", alias="production"
    )
    assert parse_model_ref("mv_01ABC") == common_pb2.ModelVersionRef(id="mv_01ABC")
    for bad in ("", ":production", "support-bot:"):
        with pytest.raises(ExportError):
            parse_model_ref(bad)

    check_destination(tmp_path / "new", force=False)  # absent: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        check_destination(tmp_path / "file", force=True)
    state = tmp_path / "work" / ".tunewright"
    state.mkdir(parents=True)
    with pytest.raises(ExportError, match="not empty"):
        check_destination(tmp_path / "work", force=False)
    with pytest.raises(ExportError, match="not replaced even with --force"):
        check_destination(tmp_path / "work", force=True, keep=[state])
    check_destination(tmp_path / "work", force=True, keep=[tmp_path / "elsewhere"])
