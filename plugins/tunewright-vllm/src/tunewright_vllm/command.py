"""The ``vllm serve`` command line and environment: a pure function of the config and the
adapters known when the server starts.

Flags as vLLM documents them (checked against vLLM's own sources and docs, not guessed):

- ``vllm serve <model> --host --port``, ``--served-model-name``, ``--dtype``,
  ``--tensor-parallel-size``, ``--gpu-memory-utilization``, ``--max-model-len``: the engine and
  frontend arguments (vllm/engine/arg_utils.py, vllm/entrypoints/openai/cli_args.py);
- ``--enable-lora --max-loras --max-lora-rank --max-cpu-loras --lora-modules name=path ...``:
  "Serving LoRA Adapters" in https://docs.vllm.ai/en/latest/features/lora/ and ``LoRAConfig``
  in vllm/config/lora.py (``max_lora_rank`` is one of 1, 8, 16, 32, 64, 128, 256, 320, 512;
  ``max_cpu_loras`` >= ``max_loras``). ``--lora-modules`` takes ``name=path`` when the item has
  an ``=`` and no ``,`` and JSON (``{"name": ..., "path": ...}``) otherwise
  (``LoRAParserAction``), so a path holding ``=`` or ``,`` is passed as JSON;
- ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` enables ``POST /v1/load_lora_adapter``, which adds
  the adapters promoted after the start ("Dynamically serving LoRA Adapters", same page);
- ``VLLM_API_KEY``: the key vLLM requires as ``Authorization: Bearer`` on ``/v1`` routes
  (vllm/entrypoints/openai/api_server.py reads ``--api-key`` or ``envs.VLLM_API_KEY``); given
  in the environment so it never shows in ``ps``.

Request logging is off by default in current vLLM (``--enable-log-requests`` opts in since
vllm-project/vllm#21739; the old ``--disable-log-requests`` is gone in 0.12), so prompts stay out
of vLLM's log; the backend never passes that flag.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tunewright_vllm.adapters import Adapter, lora_rank_for
from tunewright_vllm.config import VllmConfig

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ServeCommand:
    argv: list[str]
    env: dict[str, str]
    #: the ``--max-lora-rank`` it starts with: adapters loaded later must fit
    max_lora_rank: int


def max_lora_rank(config: VllmConfig, adapters: Sequence[Adapter]) -> int:
    """``config.max_lora_rank``, raised to hold the largest adapter of ``adapters``."""
    return max([config.max_lora_rank, *(lora_rank_for(a.rank) for a in adapters)])


def lora_module(adapter: Adapter) -> str:
    """One ``--lora-modules`` item."""
    path = str(adapter.path)
    if "=" in path or "," in path:
        return json.dumps({"name": adapter.name, "path": path})
    return f"{adapter.name}={path}"


def serve_command(
    config: VllmConfig,
    *,
    adapters: Sequence[Adapter],
    port: int,
    api_key: str,
    base_env: Mapping[str, str],
) -> ServeCommand:
    """The command that serves ``adapters`` (all of one base folder) on ``127.0.0.1:port``.

    ``base_env`` is the environment the child inherits (``os.environ``); ``config.env`` goes
    over it, and the backend's own variables over both.
    """
    if not adapters:
        raise ValueError("serve_command needs the adapter(s) to serve")
    bases = {a.base for a in adapters}
    if len(bases) > 1:
        raise ValueError(f"adapters of more than one base folder: {sorted(map(str, bases))}")
    rank = max_lora_rank(config, adapters)
    argv = [config.executable, "serve", str(adapters[0].base), "--host", HOST, "--port", str(port)]
    if config.served_model_name:
        argv += ["--served-model-name", config.served_model_name]
    argv += ["--dtype", config.dtype, "--tensor-parallel-size", str(config.tensor_parallel_size)]
    if config.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(config.gpu_memory_utilization)]
    if config.max_model_len is not None:
        argv += ["--max-model-len", str(config.max_model_len)]
    argv += ["--enable-lora", "--max-loras", str(config.max_loras), "--max-lora-rank", str(rank)]
    if config.max_cpu_loras is not None:
        argv += ["--max-cpu-loras", str(config.max_cpu_loras)]
    argv += ["--lora-modules", *(lora_module(a) for a in adapters)]
    argv += list(config.extra_args)
    env = {
        **base_env,
        **config.env,
        "VLLM_API_KEY": api_key,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    }
    return ServeCommand(argv, env, rank)
