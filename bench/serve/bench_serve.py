"""Serving throughput and latency: the ``transformers`` backend with 1, 4 and 8 LoRA adapters on
one base, against bare transformers ``generate`` on the same prompts, in one run.

Workload: ``--requests`` chat requests (support questions), spread round-robin over K model
versions (K = each of ``--adapters``), sent ``--concurrency`` at a time to the backend the
serve service uses (in-process: the HTTP layer is left out so the engine is what is
measured), greedy, ``--max-tokens`` per answer. Each version is a LoRA adapter with random
weights (rank ``--rank`` on every linear layer), so answers differ per version and run to
the budget unless they happen to say EOS.

Baselines, same prompts, same base, same token budget, run in this process:

* ``bare_sequential`` — one merged model, ``model.generate`` one request at a time (what a
  server without batching does);
* ``bare_batched`` — one merged model, ``model.generate`` on batches of ``--concurrency``
  (the best a single-model server can do; no adapter switching at all).

Printed (JSON): per configuration, generated tokens/s, requests/s, per-request latency p50 /
p99 (queueing included), and ``vs_bare_sequential`` / ``vs_bare_batched`` throughput ratios.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve/bench_serve.py            # tiny:llama-s, ~1 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/serve/bench_serve.py --base hf:/path/to/model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

QUESTIONS = [
    "I was charged twice for my plan this month",
    "My order has not arrived after two weeks",
    "How do I reset my password?",
    "The app crashes when I open the settings page",
    "Can I upgrade from the basic plan to pro?",
    "I want a refund for the duplicate charge",
    "Where can I download my invoices?",
    "My account is locked after too many attempts",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def make_adapters(base: Any, root: Path, count: int, rank: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    folders = []
    for i in range(count):
        folder = root / f"mv_bench{i}"
        torch.manual_seed(100 + i)
        config = LoraConfig(
            r=rank, lora_alpha=rank, target_modules="all-linear", init_lora_weights=False
        )
        model = get_peft_model(base.causal_lm(), config)
        # keep the random deltas small: a perturbed model, not noise
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.05)
        model.save_pretrained(str(folder / "model"))
        base.tokenizer().save_pretrained(str(folder / "tokenizer"))
        folders.append(folder)
    return folders


async def run_backend(
    backend: Any, chains: list[Any], prompts: list[list[dict[str, str]]], args: argparse.Namespace
) -> dict[str, Any]:
    from tunewright.core.serving import GenerationRequest, SamplingOptions

    semaphore = asyncio.Semaphore(args.concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(i: int) -> None:
        nonlocal tokens
        request = GenerationRequest(
            chain=chains[i % len(chains)],
            options=SamplingOptions(max_tokens=args.max_tokens, temperature=0.0),
            messages=prompts[i],
        )
        async with semaphore:
            started = time.perf_counter()
            async for delta in backend.generate(request):
                if delta.finish_reason is not None:
                    tokens += delta.completion_tokens
            latencies.append(time.perf_counter() - started)

    for chain in chains:  # adapters loaded before the clock starts, as after a promotion
        await backend.prepare(chain)
    started = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(len(prompts))])
    elapsed = time.perf_counter() - started
    return summary(tokens, elapsed, latencies, len(prompts))


def summary(tokens: int, elapsed: float, latencies: list[float], requests: int) -> dict[str, Any]:
    return {
        "requests": requests,
        "generated_tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 2),
        "requests_per_s": round(requests / elapsed, 3),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(percentile(latencies, 0.99), 3),
    }


def run_bare(
    model: Any,
    tok: Any,
    prompts: list[list[dict[str, str]]],
    args: argparse.Namespace,
    batch_size: int,
) -> dict[str, Any]:
    """Bare transformers: one merged model, requests in order, ``batch_size`` at a time.
    Latency of a request = from the start (all requests arrive at once) to its batch's end."""
    import torch

    texts = [
        tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts
    ]
    tokens, latencies = 0, []
    started = time.perf_counter()
    for at in range(0, len(texts), batch_size):
        batch = tok(
            texts[at : at + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=args.max_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        for row in new.tolist():
            n = 0
            for token in row:
                if token == tok.eos_token_id:
                    break
                n += 1
            tokens += n
        done = time.perf_counter() - started
        latencies += [done] * len(new)
    return summary(tokens, time.perf_counter() - started, latencies, len(prompts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="tiny:llama-s")
    parser.add_argument("--adapters", default="1,4,8")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    from tunewright_trl.generation import load_causal_lm, load_tokenizer
    from tunewright_trl.serving import TransformersBackend

    from tunewright.core.model_versions import TrainedChain, base_model
    from tunewright.core.plugins import PluginManager

    base_models = PluginManager().load().base_models
    base = base_model(base_models, args.base, 0)
    counts = [int(c) for c in args.adapters.split(",")]
    prompts = [
        [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" (#{i})"}]
        for i in range(args.requests)
    ]
    results: dict[str, Any] = {
        "base": args.base,
        "parameters": base.parameter_count(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "lora_rank": args.rank,
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_adapters(base, Path(tmp), max(counts), args.rank)
        chains = [TrainedChain(f.name, args.base, 0, (f,)) for f in folders]
        tok = load_tokenizer(folders[0])
        merged = load_causal_lm(base, [folders[0]])
        run_bare(merged, tok, prompts[:2], args, 2)  # warm-up
        bare_seq = run_bare(merged, tok, prompts, args, 1)
        bare_batch = run_bare(merged, tok, prompts, args, args.concurrency)
        results["bare_sequential"] = bare_seq
        results["bare_batched"] = bare_batch
        for count in counts:
            backend = TransformersBackend(
                base_models=base_models, max_batch_size=args.concurrency, max_adapters=max(counts)
            )
            try:
                asyncio.run(run_backend(backend, chains[:1], prompts[:2], args))  # warm-up
                served = asyncio.run(run_backend(backend, chains[:count], prompts, args))
                served["batches"] = backend.batches
            finally:
                asyncio.run(backend.close())
            served["vs_bare_sequential"] = round(
                served["tokens_per_s"] / bare_seq["tokens_per_s"], 2
            )
            served["vs_bare_batched"] = round(
                served["tokens_per_s"] / bare_batch["tokens_per_s"], 2
            )
            results[f"serve_{count}_adapters"] = served
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
