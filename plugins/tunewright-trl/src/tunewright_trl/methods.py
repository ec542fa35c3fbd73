"""TRL training methods: sft, dpo, reward, rlhf (RLOO / GRPO), kto.

The trainer calls a method factory with no arguments and gets a :class:`Method`. The service
uses :meth:`Method.default_hyperparameters` and :meth:`Method.preflight` before queueing (no
torch import); the job's child process calls :meth:`Method.train` with a *run* object whose
attributes are listed in ``services/trainer/README.md`` (job id, seed, base model, parsed
config, resolved hyperparameters / peft / quantization, rows, folders, callbacks).

``train`` writes the model into ``run.output_dir / "model"`` (a PEFT adapter in safetensors,
or full weights without PEFT) and the tokenizer into ``run.output_dir / "tokenizer"``, and
returns its final metrics. HF checkpoints (weights, optimizer, scheduler, RNG) go to
``run.checkpoint_dir`` every ``run.checkpoint_every`` steps and are reported with
``run.checkpoint(step, path, metrics)``; ``run.resume_from`` continues from one. A pause
request saves a checkpoint at the next step and returns ``{"paused": 1.0}`` without output.

Device settings are hyperparameters, resolved on the machine that trains (``auto`` follows the
device): ``precision`` (``auto``: bf16 on a GPU that has it, else fp16 there, fp32 on CPU),
``gradient_checkpointing`` (``None``: on for a quantized base, where QLoRA is about memory,
off otherwise; non-reentrant, which PEFT's frozen inputs need) and ``attn_implementation``
(``auto``: ``flash_attention_2`` on a GPU in 16-bit when the ``flash_attn`` package imports,
else ``sdpa``, which is what transformers picks by itself). A quantized base's
``compute_dtype`` of ``auto`` follows the precision.

A parent model (DPO after SFT) is applied the way the evaluator rebuilds versions: on a full
precision base its LoRA adapter is merged and a new adapter trained on top. A 4/8-bit base
cannot take a merge, so there the parent's adapter itself is loaded trainable and trained on
(the TRL trainers then keep a frozen copy of it, named ``ref``, as the reference model), and the
result is saved as its difference from the parent's adapter (:func:`_save_as_delta`), so the
version is still "the parent's chain plus one adapter" for the evaluator, serve and export.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

from tunewright_trl.configs import DpoConfig, KtoConfig, RewardConfig, RlhfConfig, SftConfig

PAUSED: Final = "paused"

PRECISIONS: Final = ("auto", "fp32", "bf16", "fp16")
ATTENTION: Final = ("auto", "eager", "sdpa", "flash_attention_2")
_DTYPE_OF: Final[Mapping[str, str]] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class Method:
    """Base of the TRL methods; subclasses fill the class attributes and ``_trainer``."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    dataset_kinds: ClassVar[frozenset[str]]
    #: the metric whose rise shows the method worked, and a short human description
    signal: ClassVar[str] = ""
    supports_quantization: ClassVar[bool] = True
    _defaults: ClassVar[Mapping[str, Any]] = {}

    def default_hyperparameters(self) -> dict[str, Any]:
        return {
            "epochs": 1,
            "max_steps": 0,
            "learning_rate": 2e-4,
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "max_length": 256,
            "warmup_ratio": 0.0,
            "lr_scheduler": "linear",
            "weight_decay": 0.0,
            "packing": False,
            "assistant_only_loss": False,
            "precision": "auto",
            #: None: on for a quantized base (QLoRA), off otherwise
            "gradient_checkpointing": None,
            "attn_implementation": "auto",
            #: held-out rows scored before and after training (0 = the whole eval split)
            "max_eval_samples": 0,
            **self._defaults,
        }

    def preflight(
        self,
        *,
        config: Any,
        peft: Mapping[str, Any],
        quantization: Mapping[str, Any] | None,
        hyperparameters: Mapping[str, Any],
    ) -> list[tuple[str, str]]:
        """Method x quantization x PEFT compatibility: ``(field, reason)`` pairs."""
        problems = []
        if quantization and peft.get("type") != "lora":
            problems.append(
                (
                    "peft.type",
                    "a quantized base cannot be trained in full: use LoRA (QLoRA) or no "
                    "quantization",
                )
            )
        if quantization and not self.supports_quantization:
            problems.append(("quantization.bits", f"method {self.name} does not support it"))
        if hyperparameters.get("packing") and self.name != "sft":
            problems.append(("hyperparameters.packing", "only sft packs examples"))
        if hyperparameters.get("assistant_only_loss") and self.name != "sft":
            problems.append(("hyperparameters.assistant_only_loss", "only sft uses it"))
        return problems + _device_problems(hyperparameters)

    # --- training ---

    def train(self, run: Any) -> dict[str, float]:
        from transformers import PrinterCallback, set_seed

        set_seed(int(run.seed))
        tokenizer = _tokenizer(run)
        trainer = self._trainer(run, tokenizer)
        trainer.add_callback(_bridge(run))
        trainer.remove_callback(PrinterCallback)  # progress goes to the run, not stdout
        metrics: dict[str, float] = {}
        has_eval = getattr(trainer, "eval_dataset", None) is not None
        if has_eval and run.resume_from is None:
            metrics.update(_prefixed("initial_", trainer.evaluate()))
        result = trainer.train(
            resume_from_checkpoint=str(run.resume_from) if run.resume_from else None
        )
        state = trainer.state
        if run.stop_requested() == "pause" and state.global_step < state.max_steps:
            return {PAUSED: 1.0}  # stopped early at a checkpoint; a finished run just finishes
        metrics.update(_numeric(result.metrics))
        if has_eval:
            metrics.update(_numeric(trainer.evaluate()))
        metrics.update(self._extra_metrics(trainer))
        out = Path(run.output_dir)
        trainer.save_model(str(out / "model"))
        if _continues_parent_adapter(run):
            _save_as_delta(out / "model", Path(run.parent_model) / "model")
        tokenizer.save_pretrained(str(out / "tokenizer"))
        return metrics

    def _trainer(self, run: Any, tokenizer: Any) -> Any:
        raise NotImplementedError

    def _extra_metrics(self, trainer: Any) -> dict[str, float]:
        return {}


class Sft(Method):
    name = "sft"
    config_cls = SftConfig
    dataset_kinds = frozenset({"sft"})
    signal = "loss down, held-out mean token accuracy up"

    def _trainer(self, run: Any, tokenizer: Any) -> Any:
        from trl import SFTConfig, SFTTrainer

        cfg: SftConfig = run.config
        hp = run.hyperparameters
        assistant_only = bool(hp["assistant_only_loss"])
        row = _sft_row
        if assistant_only and "{% generation %}" not in (tokenizer.chat_template or ""):
            # TRL masks by {% generation %} markers and patches only templates it knows (not
            # SmolLM2's): split each conversation before its last answer instead and train on
            # that completion, which works with any template
            assistant_only, row = False, _sft_completion_row
        args = SFTConfig(
            **_common_args(run),
            max_length=int(hp["max_length"]),
            packing=bool(hp["packing"]),
            packing_strategy=cfg.packing_strategy,
            assistant_only_loss=assistant_only,
            completion_only_loss=True if row is _sft_completion_row else None,
            neftune_noise_alpha=cfg.neftune_noise_alpha,
            eos_token=tokenizer.eos_token,
        )
        return SFTTrainer(
            model=_policy(run, tokenizer),
            args=args,
            train_dataset=_dataset(run.train_rows, row),
            eval_dataset=_dataset(run.eval_rows, row),
            processing_class=tokenizer,
            peft_config=_lora(run, "CAUSAL_LM"),
        )


class Dpo(Method):
    name = "dpo"
    config_cls = DpoConfig
    dataset_kinds = frozenset({"preference"})
    signal = "held-out reward margin and reward accuracy up"
    _defaults: ClassVar[Mapping[str, Any]] = {"learning_rate": 5e-4}

    def _trainer(self, run: Any, tokenizer: Any) -> Any:
        from trl import DPOConfig, DPOTrainer

        cfg: DpoConfig = run.config
        args = DPOConfig(
            **_common_args(run),
            max_length=int(run.hyperparameters["max_length"]),
            beta=cfg.beta,
            loss_type=[cfg.loss_type],
        )
        # with a LoRA config and no ref_model, the reference is the base with adapters off
        return DPOTrainer(
            model=_policy(run, tokenizer),
            args=args,
            train_dataset=_dataset(run.train_rows, _preference_row),
            eval_dataset=_dataset(run.eval_rows, _preference_row),
            processing_class=tokenizer,
            peft_config=_lora(run, "CAUSAL_LM"),
        )


class Reward(Method):
    name = "reward"
    config_cls = RewardConfig
    dataset_kinds = frozenset({"preference"})
    signal = "held-out pair accuracy up"
    supports_quantization = False
    _defaults: ClassVar[Mapping[str, Any]] = {"learning_rate": 1e-3}

    def _trainer(self, run: Any, tokenizer: Any) -> Any:
        from trl import RewardConfig as TrlRewardConfig
        from trl import RewardTrainer

        cfg: RewardConfig = run.config
        args = TrlRewardConfig(
            **_common_args(run),
            max_length=int(run.hyperparameters["max_length"]),
            center_rewards_coefficient=cfg.center_rewards_coefficient,
        )
        model = run.base.sequence_classifier()
        model.config.pad_token_id = tokenizer.pad_token_id
        _set_attention(model, device_settings(run).attention)
        return RewardTrainer(
            model=model,
            args=args,
            train_dataset=_dataset(run.train_rows, _preference_row),
            eval_dataset=_dataset(run.eval_rows, _preference_row),
            processing_class=tokenizer,
            peft_config=_lora(run, "SEQ_CLS", modules_to_save=["score"]),
        )


class Rlhf(Method):
    name = "rlhf"
    config_cls = RlhfConfig
    dataset_kinds = frozenset({"prompt"})
    signal = "mean reward (from the registered reward model) up"
    _defaults: ClassVar[Mapping[str, Any]] = {"learning_rate": 1e-3, "batch_size": 8}

    def preflight(
        self,
        *,
        config: Any,
        peft: Mapping[str, Any],
        quantization: Mapping[str, Any] | None,
        hyperparameters: Mapping[str, Any],
    ) -> list[tuple[str, str]]:
        problems = super().preflight(
            config=config, peft=peft, quantization=quantization, hyperparameters=hyperparameters
        )
        batch = int(hyperparameters["batch_size"]) * int(
            hyperparameters["gradient_accumulation_steps"]
        )
        if batch % int(config.num_generations):
            problems.append(
                (
                    "hyperparameters.batch_size",
                    f"batch_size x gradient_accumulation_steps ({batch}) must be a multiple of "
                    f"method_config.num_generations ({config.num_generations})",
                )
            )
        return problems

    def _trainer(self, run: Any, tokenizer: Any) -> Any:
        cfg: RlhfConfig = run.config
        if run.reward_model is None:
            raise ValueError("rlhf needs spec.reward_model (a trained reward model version)")
        reward_model, reward_tokenizer = _reward_model(run)
        common = {
            **_common_args(run),
            "num_generations": cfg.num_generations,
            "max_completion_length": cfg.max_completion_length,
            "beta": cfg.beta,
            "temperature": cfg.temperature,
        }
        if cfg.algorithm == "grpo":
            from trl import GRPOConfig as ArgsCls
            from trl import GRPOTrainer as TrainerCls
        else:
            from trl import RLOOConfig as ArgsCls  # type: ignore[assignment]
            from trl import RLOOTrainer as TrainerCls  # type: ignore[assignment]
        return TrainerCls(
            model=_policy(run, tokenizer),
            reward_funcs=reward_model,
            args=ArgsCls(**common),
            train_dataset=_dataset(run.train_rows, _prompt_row),
            processing_class=tokenizer,
            reward_processing_classes=reward_tokenizer,
            peft_config=_lora(run, "CAUSAL_LM"),
        )

    def _extra_metrics(self, trainer: Any) -> dict[str, float]:
        rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
        if not rewards:
            return {}
        k = max(1, len(rewards) // 4)
        return {
            "initial_mean_reward": sum(rewards[:k]) / k,
            "final_mean_reward": sum(rewards[-k:]) / k,
        }


class Kto(Method):
    name = "kto"
    config_cls = KtoConfig
    dataset_kinds = frozenset({"unpaired"})
    signal = "held-out margin between desirable and undesirable rewards up"
    _defaults: ClassVar[Mapping[str, Any]] = {"learning_rate": 5e-4}

    def _trainer(self, run: Any, tokenizer: Any) -> Any:
        from trl import KTOConfig, KTOTrainer

        cfg: KtoConfig = run.config
        args = KTOConfig(
            **_common_args(run),
            max_length=int(run.hyperparameters["max_length"]),
            beta=cfg.beta,
            desirable_weight=cfg.desirable_weight,
            undesirable_weight=cfg.undesirable_weight,
        )
        return KTOTrainer(
            model=_policy(run, tokenizer),
            args=args,
            train_dataset=_dataset(run.train_rows, _unpaired_row),
            eval_dataset=_dataset(run.eval_rows, _unpaired_row),
            processing_class=tokenizer,
            peft_config=_lora(run, "CAUSAL_LM"),
        )


METHODS: Final[tuple[type[Method], ...]] = (Sft, Dpo, Reward, Rlhf, Kto)


# --- shared pieces ------------------------------------------------------------------------


def _device_problems(hp: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The device hyperparameters' values (their names are checked by the trainer)."""
    problems = []
    if hp.get("precision", "auto") not in PRECISIONS:
        problems.append(
            (
                "hyperparameters.precision",
                f"must be one of {', '.join(PRECISIONS)}; got {hp['precision']!r}",
            )
        )
    attention = hp.get("attn_implementation", "auto")
    if attention not in ATTENTION:
        problems.append(
            (
                "hyperparameters.attn_implementation",
                f"must be one of {', '.join(ATTENTION)}; got {attention!r}",
            )
        )
    elif attention == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            problems.append(
                (
                    "hyperparameters.attn_implementation",
                    "flash_attention_2 needs the flash_attn package, which is not installed: "
                    "use sdpa or auto",
                )
            )
        if hp.get("precision") == "fp32":
            problems.append(
                (
                    "hyperparameters.attn_implementation",
                    "flash_attention_2 runs in 16 bits only: set precision to bf16, fp16 or auto",
                )
            )
    checkpointing = hp.get("gradient_checkpointing")
    if checkpointing is not None and not isinstance(checkpointing, bool):
        problems.append(
            (
                "hyperparameters.gradient_checkpointing",
                f"must be true, false or unset (on for a quantized base); got {checkpointing!r}",
            )
        )
    return problems


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """The device hyperparameters resolved on the machine that trains."""

    cpu: bool
    precision: str  # fp32 | bf16 | fp16
    gradient_checkpointing: bool
    attention: str  # eager | sdpa | flash_attention_2


def device_settings(run: Any) -> DeviceSettings:
    """Resolve ``precision``, ``gradient_checkpointing`` and ``attn_implementation`` for
    ``run.device``; raises ``ValueError`` for what this machine cannot do."""
    import torch

    hp = run.hyperparameters
    cpu = run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available())
    precision = str(hp.get("precision") or "auto")
    if precision == "auto":
        precision = "fp32" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    elif precision == "fp16" and cpu:
        raise ValueError("hyperparameters.precision fp16 needs a GPU: use fp32 or bf16 on CPU")
    elif precision == "bf16" and not cpu and not torch.cuda.is_bf16_supported():
        raise ValueError("hyperparameters.precision bf16: this GPU has no bf16, use fp16 or auto")
    checkpointing = hp.get("gradient_checkpointing")
    if checkpointing is None:
        checkpointing = bool(run.quantization)
    attention = str(hp.get("attn_implementation") or "auto")
    half = precision in ("bf16", "fp16")
    if attention == "auto":
        flash = not cpu and half and importlib.util.find_spec("flash_attn") is not None
        attention = "flash_attention_2" if flash else "sdpa"
    elif attention == "flash_attention_2" and (cpu or not half):
        raise ValueError(
            "hyperparameters.attn_implementation flash_attention_2 needs a GPU and precision "
            f"bf16 or fp16 (this job: {'cpu' if cpu else 'cuda'}, {precision})"
        )
    return DeviceSettings(cpu, precision, bool(checkpointing), attention)


def _common_args(run: Any) -> dict[str, Any]:
    hp = run.hyperparameters
    device = device_settings(run)
    return {
        "output_dir": str(run.checkpoint_dir),
        "num_train_epochs": float(hp["epochs"]),
        "max_steps": int(hp["max_steps"]) if int(hp["max_steps"]) > 0 else -1,
        "learning_rate": float(hp["learning_rate"]),
        "per_device_train_batch_size": int(hp["batch_size"]),
        "per_device_eval_batch_size": int(hp["batch_size"]),
        "gradient_accumulation_steps": int(hp["gradient_accumulation_steps"]),
        # transformers 5: a warmup_steps below 1 is a ratio of the total steps
        "warmup_steps": float(hp["warmup_ratio"]),
        "lr_scheduler_type": str(hp["lr_scheduler"]),
        "weight_decay": float(hp["weight_decay"]),
        "seed": int(run.seed),
        "data_seed": int(run.seed),
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": int(run.checkpoint_every),
        # the worker uploads each checkpoint and deletes the older ones itself
        "save_total_limit": None,
        "eval_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "bf16": device.precision == "bf16",
        "fp16": device.precision == "fp16",
        "use_cpu": device.cpu,
        # transformers 5 name (gradient_checkpointing is its deprecated alias); non-reentrant
        # checkpointing works with PEFT's frozen base, whose inputs carry no gradient
        "activation_checkpointing": device.gradient_checkpointing,
        "activation_checkpointing_kwargs": (
            {"use_reentrant": False} if device.gradient_checkpointing else None
        ),
        "dataloader_num_workers": 0,
    }


def _tokenizer(run: Any) -> Any:
    if run.parent_model is not None:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(Path(run.parent_model) / "tokenizer"))
    return run.base.tokenizer()


def _policy(run: Any, tokenizer: Any) -> Any:
    """The model to train, with the attention implementation of :func:`device_settings`."""
    device = device_settings(run)
    model = _policy_weights(run, _quantization(run, device.precision))
    _set_attention(model, device.attention)
    return model


def _policy_weights(run: Any, quantization: dict[str, Any] | None) -> Any:
    """The base (maybe quantized) with a parent's weights applied: a full-precision base takes
    the parent's adapter merged; a quantized one takes it as the trainable adapter (see the
    module docstring); a parent's full weights replace the base's (quantized when asked)."""
    if run.parent_model is None:
        return run.base.causal_lm(quantization=quantization)
    weights = Path(run.parent_model) / "model"
    if (weights / "adapter_config.json").is_file():
        from peft import PeftModel

        if quantization:
            from tunewright_trl.export import _check_plain_lora, _read_config

            # fail now, not after training, if the result cannot be saved as a delta
            _check_plain_lora(weights, _read_config(weights))
            base = run.base.causal_lm(quantization=quantization)
            return PeftModel.from_pretrained(base, str(weights), is_trainable=True)
        base = run.base.causal_lm()
        return PeftModel.from_pretrained(base, str(weights)).merge_and_unload()
    if quantization:
        from tunewright_trl.models import HfBaseModel

        # the parent's full checkpoint as a local hf: model (quantized at load)
        return HfBaseModel(str(weights), seed=int(run.seed)).causal_lm(quantization=quantization)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(weights), use_safetensors=True)


def _quantization(run: Any, precision: str) -> dict[str, Any] | None:
    """The job's quantization, its ``compute_dtype`` ``auto`` (or unset) resolved to the
    training precision: 4-bit layers then compute in the dtype autocast runs in."""
    if not run.quantization:
        return None
    quantization = dict(run.quantization)
    if quantization.get("compute_dtype") in (None, "", "auto"):
        quantization["compute_dtype"] = _DTYPE_OF[precision]
    return quantization


def _set_attention(model: Any, attention: str) -> None:
    """Switch a loaded model's attention (transformers 5 does it in place, no reload)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(target.config, "_attn_implementation", None) != attention:
        target.set_attn_implementation(attention)


def _continues_parent_adapter(run: Any) -> bool:
    """Whether the job trains its parent's adapter itself (a quantized base, a LoRA parent)."""
    return bool(
        run.quantization
        and run.parent_model is not None
        and (Path(run.parent_model) / "model" / "adapter_config.json").is_file()
    )


def _save_as_delta(adapter: Path, parent: Path) -> None:
    """Rewrite the trained continuation of ``parent``'s adapter, saved in ``adapter``, as its
    difference from ``parent``: ``s'·B'A' - s·BA`` is one LoRA of rank ``r' + r`` (the two
    adapters combined exactly by :func:`~tunewright_trl.export.combine_lora_adapters`, the
    parent's with ``B`` negated). Applied after the parent's adapter it gives the trained one,
    the same chain semantics as an adapter trained on the merged parent. Also drops the frozen
    reference copy (``ref/``) that the TRL trainers saved beside the adapter."""
    from safetensors.torch import load_file, save_file

    from tunewright_trl.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, combine_lora_adapters

    for folder in adapter.iterdir():
        if folder.is_dir() and (folder / ADAPTER_CONFIG).is_file():
            shutil.rmtree(folder)  # another adapter of the PeftModel (TRL's "ref" copy)
    with tempfile.TemporaryDirectory(prefix="tw-delta-") as tmp:
        negated, delta = Path(tmp) / "negated", Path(tmp) / "delta"
        negated.mkdir()
        delta.mkdir()
        shutil.copyfile(parent / ADAPTER_CONFIG, negated / ADAPTER_CONFIG)
        tensors = load_file(str(parent / ADAPTER_WEIGHTS))
        save_file(
            {k: -v if k.endswith(".lora_B.weight") else v for k, v in tensors.items()},
            str(negated / ADAPTER_WEIGHTS),
            metadata={"format": "pt"},
        )
        combine_lora_adapters([adapter, negated], delta)
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            shutil.copyfile(delta / name, adapter / name)


def _reward_model(run: Any) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    folder = Path(run.reward_model)
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    weights = folder / "model"
    if (weights / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(run.base.sequence_classifier(), str(weights))
        model = model.merge_and_unload()
    else:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(weights), use_safetensors=True
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def _lora(run: Any, task_type: str, modules_to_save: list[str] | None = None) -> Any:
    peft = run.peft
    if peft.get("type") != "lora" or _continues_parent_adapter(run):
        return None  # none, or the parent's adapter is the one trained (a PeftModel already)
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=int(peft["r"]),
        lora_alpha=peft["alpha"],
        lora_dropout=float(peft["dropout"]),
        target_modules=list(peft["target_modules"]) or "all-linear",
        # only these decoder layers get adapters (PEFT finds the layer list by name)
        layers_to_transform=list(peft.get("layers_to_transform") or []) or None,
        modules_to_save=modules_to_save,
    )


def _dataset(rows: Any, convert: Any) -> Any:
    if not rows:
        return None
    from datasets import Dataset

    return Dataset.from_list([convert(r) for r in rows])


def _as_messages(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value)


def _sft_row(row: Mapping[str, Any]) -> dict[str, Any]:
    if "messages" in row:
        return {"messages": list(row["messages"])}
    return {
        "prompt": _as_messages(row["prompt"], "user"),
        "completion": _as_messages(row["completion"], "assistant"),
    }


def _sft_completion_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A conversation as prompt (every turn before the last answer) and completion (it)."""
    if "messages" not in row:
        return _sft_row(row)
    messages = list(row["messages"])
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    if last <= 0:
        raise ValueError("an SFT conversation needs an assistant answer after a prompt")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def _preference_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "prompt": _as_messages(row["prompt"], "user"),
        "chosen": _as_messages(row["chosen"], "assistant"),
        "rejected": _as_messages(row["rejected"], "assistant"),
    }


def _unpaired_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "prompt": _as_messages(row["prompt"], "user"),
        "completion": _as_messages(row["completion"], "assistant"),
        "label": bool(row["label"]),
    }


def _prompt_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"prompt": _as_messages(row["prompt"], "user")}


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, int | float) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    # timings of the baseline evaluation are noise; keep what it measured
    timing = ("runtime", "per_second", "preparation_time", "epoch")
    return {prefix + k: v for k, v in _numeric(metrics).items() if not k.endswith(timing)}


def _bridge(run: Any) -> Any:
    """A TrainerCallback that reports to the run and honours pause requests."""
    from transformers import TrainerCallback

    class Bridge(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            run.progress(
                step=int(state.global_step),
                total_steps=int(state.max_steps),
                epoch=float(state.epoch or 0.0),
                metrics=_numeric(logs or {}),
            )

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if run.stop_requested() == "pause":
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            last = state.log_history[-1] if state.log_history else {}
            run.checkpoint(step=int(state.global_step), path=path, metrics=_numeric(last))

    return Bridge()
