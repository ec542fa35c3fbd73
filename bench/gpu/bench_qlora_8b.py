"""QLoRA SFT of an 8B-shaped Llama on one GPU: the trainer's method code path against a bare
TRL script with the same settings.

    .venv/bin/python bench/gpu/bench_qlora_8b.py                 # one CUDA GPU, ~5 min on H100
    OMP_NUM_THREADS=1 .venv/bin/python bench/gpu/bench_qlora_8b.py --smoke-cpu   # tiny, CPU

The model has Llama-3.1-8B's shape (4096 hidden, 14336 MLP, 32 layers, 32 heads / 8 KV heads,
128256 vocabulary) with seeded random weights: no download. It is built directly in bf16 on
the GPU (16 GB; an fp32 build on the CPU would need 32 GB and minutes) and saved with a small
byte-level BPE tokenizer (ChatML, ``<|im_end|>``) to a temporary ``hf:`` folder, which both
runs load with bitsandbytes nf4 + double quantization. Token ids stay below the tokenizer's
8k entries, but the embedding and the LM head keep the full 128k vocabulary, so the compute
per token is the real model's.

Both runs: LoRA r=16, alpha 32, dropout 0.05 on all linear layers; packed ("wrapped") 2,048-token
sequences, batch 4, ``--steps`` optimizer steps, learning rate 2e-4, linear schedule; bf16
autocast (fp16 on a GPU without bf16), 4-bit compute in the same dtype, non-reentrant gradient
checkpointing, ``flash_attention_2`` when the ``flash_attn`` package imports, else ``sdpa``.
``method`` calls :class:`tunewright_trl.methods.Sft` with a run object the way the trainer's
child process does (its ``hf:`` base model, its resolved hyperparameters: precision, gradient
checkpointing and attention all ``auto``); ``bare`` writes the same ``SFTTrainer`` call by
hand. Each runs in its own process, so peak GPU memory is its own
(``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` from process start, model load
included). Tokens/s is measured over the training loop after ``--warmup`` steps, from TRL's
``num_tokens``. The summary also prints the trainer's pre-flight memory estimate for the same
job, to compare with the measured peak.

Without CUDA it stops with exit status 2 unless ``--smoke-cpu``: a 2-layer, 64-wide model,
64-token sequences, batch 2, 4 steps, fp32 on the CPU (bitsandbytes 4-bit works there), peak
memory as the process's max RSS. That only proves the script works end to end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Llama-3.1-8B's config.json shape
FULL_SHAPE = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
}
SMOKE_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
}
LORA = {"type": "lora", "r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": []}
LEARNING_RATE = 2e-4
SEED = 0


def _importable() -> None:
    """Use the repo's sources when the distributions are not installed (a bare GPU box with
    torch, transformers, peft, trl, bitsandbytes and datasets)."""
    try:
        import tunewright_trl  # noqa: F401
    except ImportError:
        for src in (
            "libs/tunewright-core/src",
            "services/trainer/src",
            "plugins/tunewright-trl/src",
        ):
            sys.path.insert(0, str(ROOT / src))


# --- phase: build -------------------------------------------------------------------------


def _words(rng: random.Random, n: int) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    return ["".join(rng.choice(letters[: rng.randint(8, 26)]) for _ in range(rng.randint(2, 8)))
            for _ in range(n)]  # fmt: skip


def build(workdir: Path, smoke: bool, rows_needed: int) -> dict[str, Any]:
    """The ``hf:`` folder (seeded random weights + tokenizer) and the training rows."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from tunewright_trl.models import build_tiny_tokenizer

    rng = random.Random(SEED)
    vocab_words = _words(rng, 3000)
    rows = []
    for _ in range(rows_needed):
        user = " ".join(rng.choices(vocab_words, k=rng.randint(20, 60)))
        answer = " ".join(rng.choices(vocab_words, k=rng.randint(150, 300)))
        rows.append({"messages": [{"role": "user", "content": user},
                                  {"role": "assistant", "content": answer}]})  # fmt: skip
    with (workdir / "rows.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    shape = SMOKE_SHAPE if smoke else FULL_SHAPE
    texts = [m["content"] for r in rows[:400] for m in r["messages"]]
    tokenizer = build_tiny_tokenizer(texts, 512 if smoke else 8192)
    tokenizer.model_max_length = 10**6  # rows are long; packing cuts them into --seq windows
    config = LlamaConfig(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    started = time.perf_counter()
    if smoke:
        model = LlamaForCausalLM(config)
    else:  # parameters created in bf16 on the GPU: 16 GB, no 32 GB fp32 copy on the host
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
        torch.set_default_dtype(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    folder = workdir / "model"
    model.save_pretrained(str(folder), max_shard_size="5GB")
    tokenizer.save_pretrained(str(folder))
    params = sum(p.numel() for p in model.parameters())
    return {"parameters": params, "build_s": round(time.perf_counter() - started, 1)}


# --- phases: method and bare --------------------------------------------------------------


@dataclass
class Clock:
    """(time, step, num_tokens) at each logged optimizer step."""

    marks: list[tuple[float, int, float]] = field(default_factory=list)
    tokens_per_step: int = 0
    #: what the run resolved (the method's device settings), for the summary
    settings: dict[str, Any] = field(default_factory=dict)

    def mark(self, step: int, logs: dict[str, Any]) -> None:
        if "loss" not in logs:  # the final summary log repeats the last step
            return
        tokens = float(logs.get("num_tokens") or step * self.tokens_per_step)
        self.marks.append((time.perf_counter(), step, tokens))

    def rate(self, warmup: int) -> tuple[float, int]:
        marks = [m for m in self.marks if m[1] >= warmup] or self.marks
        if len(marks) < 2:
            return float("nan"), 0
        (t0, s0, n0), (t1, s1, n1) = marks[0], marks[-1]
        return (n1 - n0) / (t1 - t0), s1 - s0


@dataclass
class Run:
    """The run object the trainer's child process builds (services/trainer/README.md)."""

    job_id: str
    seed: int
    base: Any
    config: Any
    hyperparameters: dict[str, Any]
    peft: dict[str, Any]
    quantization: dict[str, Any]
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] | None
    output_dir: Path
    checkpoint_dir: Path
    clock: Clock
    resume_from: Path | None = None
    checkpoint_every: int = 10**9
    parent_model: Path | None = None
    reward_model: Path | None = None
    device: str = "cuda"

    def progress(self, *, step: int, total_steps: int, epoch: float, metrics: Any) -> None:
        self.clock.mark(step, metrics)

    def checkpoint(self, *, step: int, path: Path, metrics: dict[str, float]) -> None:
        pass

    def stop_requested(self) -> str | None:
        return None


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    from tunewright_trl.methods import Sft

    return {
        **Sft().default_hyperparameters(),
        "max_steps": args.steps,
        "batch_size": args.batch,
        "max_length": args.seq,
        "packing": True,
        "learning_rate": LEARNING_RATE,
    }


def _quantization() -> dict[str, Any]:
    return {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "auto"}


def run_method(workdir: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> Clock:
    from dataclasses import asdict

    from tunewright_trl.configs import SftConfig
    from tunewright_trl.methods import Sft, device_settings
    from tunewright_trl.models import HfBaseModel

    clock = Clock(tokens_per_step=args.batch * args.seq)
    run = Run(
        job_id="bench-method",
        seed=SEED,
        base=HfBaseModel(str(workdir / "model"), seed=SEED),
        config=SftConfig(packing_strategy="wrapped"),
        hyperparameters=_hyperparameters(args),
        peft=dict(LORA),
        quantization=_quantization(),
        train_rows=rows,
        eval_rows=None,
        output_dir=workdir / "method-out",
        checkpoint_dir=workdir / "method-checkpoints",
        clock=clock,
        device="cpu" if args.smoke_cpu else "cuda",
    )
    clock.settings = asdict(device_settings(run))
    Sft().train(run)
    return clock


def run_bare(workdir: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> Clock:
    import importlib.util

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        TrainerCallback,
    )
    from trl import SFTConfig, SFTTrainer

    gpu = not args.smoke_cpu
    bf16 = gpu and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16 if gpu else torch.float32
    flash = gpu and importlib.util.find_spec("flash_attn") is not None
    folder = str(workdir / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        ),
        device_map="auto" if gpu else "cpu",
        attn_implementation="flash_attention_2" if flash else "sdpa",
        use_safetensors=True,
        local_files_only=True,
    )
    clock = Clock(tokens_per_step=args.batch * args.seq)
    clock.settings = {
        "precision": "bf16" if bf16 else "fp16" if gpu else "fp32",
        "gradient_checkpointing": True,
        "attention": model.config._attn_implementation,
    }

    class Timer(TrainerCallback):
        def on_log(self, a: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            clock.mark(int(state.global_step), logs or {})

    config = SFTConfig(
        output_dir=str(workdir / "bare-checkpoints"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        max_length=args.seq,
        packing=True,
        packing_strategy="wrapped",
        bf16=bf16,
        fp16=gpu and not bf16,
        use_cpu=not gpu,
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=SEED,
        data_seed=SEED,
        dataloader_num_workers=0,
        eos_token=tokenizer.eos_token,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            task_type="CAUSAL_LM",
            r=int(LORA["r"]),
            lora_alpha=float(LORA["alpha"]),
            lora_dropout=float(LORA["dropout"]),
            target_modules="all-linear",
        ),
        callbacks=[Timer()],
    )
    trainer.train()
    trainer.save_model(str(workdir / "bare-out"))
    return clock


def phase(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    _importable()
    started = time.perf_counter()
    if name == "build":
        return build(workdir, args.smoke_cpu, _rows_needed(args))
    import torch

    rows = [json.loads(line) for line in (workdir / "rows.jsonl").read_text().splitlines()]
    clock = (run_method if name == "method" else run_bare)(workdir, args, rows)
    rate, steps = clock.rate(args.warmup)
    out: dict[str, Any] = {
        "tokens_per_s": round(rate, 1),
        "timed_steps": steps,
        "wall_s": round(time.perf_counter() - started, 1),
        "settings": clock.settings,
    }
    if args.smoke_cpu:  # ru_maxrss is KiB on Linux
        out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    else:
        out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _rows_needed(args: argparse.Namespace) -> int:
    # ~300-650 tokens per row; packing needs steps x batch x seq tokens (an epoch more is fine)
    return max(64, math.ceil(args.steps * args.batch * args.seq / 300) + 16)


def estimate(workdir: Path, args: argparse.Namespace) -> float:
    """The trainer's pre-flight estimate for this job, in GiB."""
    _importable()
    from tunewright_trl.models import HfBaseModel

    from tunewright.trainer.preflight import memory_estimate

    params = HfBaseModel(str(workdir / "model")).parameter_count()
    memory = memory_estimate(
        params,
        _hyperparameters(args),
        LORA,
        _quantization(),
        device="cpu" if args.smoke_cpu else "cuda",
    )
    return memory.total / 2**30


# --- driver -------------------------------------------------------------------------------


def _child(name: str, workdir: Path, argv: list[str]) -> dict[str, Any]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, __file__, *argv, "--phase", name, "--workdir", str(workdir)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"bench/gpu: phase {name} failed (exit status {done.returncode})")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    print(f"[{name}] {time.perf_counter() - started:.0f} s: {result}", file=sys.stderr)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke-cpu", action="store_true", help="tiny shape on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (20; 4 smoke)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (4; 2)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (2048; 64)")
    parser.add_argument("--warmup", type=int, default=None, help="steps not timed (3; 1)")
    parser.add_argument("--phase", choices=("build", "method", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    smoke = args.smoke_cpu
    for name, full, tiny in (
        ("steps", 20, 4),
        ("batch", 4, 2),
        ("seq", 2048, 64),
        ("warmup", 3, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, tiny if smoke else full)
    if args.phase:
        print("RESULT " + json.dumps(phase(args.phase, args.workdir, args)), flush=True)
        return 0

    import torch

    if not smoke and not torch.cuda.is_available():
        print(
            "bench/gpu: no CUDA device (torch.cuda.is_available() is False): this benchmark "
            "trains an 8B-shaped model on one GPU. Use --smoke-cpu for the tiny CPU check.",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tw-bench-gpu-") as tmp:
        workdir = Path(tmp)
        built = _child("build", workdir, argv)
        method = _child("method", workdir, argv)
        bare = _child("bare", workdir, argv)
        estimated = estimate(workdir, args)
    peak = "peak_rss_gib" if smoke else "peak_allocated_gib"
    summary = {
        "mode": "smoke-cpu" if smoke else "gpu",
        "gpu": bare.get("gpu", ""),
        "parameters": built["parameters"],
        "steps": args.steps,
        "batch": args.batch,
        "seq": args.seq,
        "method": method,
        "bare": bare,
        "tokens_per_s_ratio": round(method["tokens_per_s"] / bare["tokens_per_s"], 3),
        "peak_memory_ratio": round(method[peak] / bare[peak], 3),
        "preflight_estimate_gib": round(estimated, 4),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
