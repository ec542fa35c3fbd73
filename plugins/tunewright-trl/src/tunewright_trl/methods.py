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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

from tunewright_trl.configs import DpoConfig, KtoConfig, RewardConfig, RlhfConfig, SftConfig

PAUSED: Final = "paused"


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
        return problems

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
        args = SFTConfig(
            **_common_args(run),
            max_length=int(hp["max_length"]),
            packing=bool(hp["packing"]),
            packing_strategy=cfg.packing_strategy,
            assistant_only_loss=bool(hp["assistant_only_loss"]),
            neftune_noise_alpha=cfg.neftune_noise_alpha,
            eos_token=tokenizer.eos_token,
        )
        return SFTTrainer(
            model=_policy(run, tokenizer),
            args=args,
            train_dataset=_dataset(run.train_rows, _sft_row),
            eval_dataset=_dataset(run.eval_rows, _sft_row),
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


def _common_args(run: Any) -> dict[str, Any]:
    import torch

    hp = run.hyperparameters
    cpu = run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available())
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
        "bf16": False,
        "fp16": False,
        "use_cpu": cpu,
        "activation_checkpointing": False,
        "dataloader_num_workers": 0,
    }


def _tokenizer(run: Any) -> Any:
    if run.parent_model is not None:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(Path(run.parent_model) / "tokenizer"))
    return run.base.tokenizer()


def _policy(run: Any, tokenizer: Any) -> Any:
    """The model to train: the base (maybe quantized), with a parent's weights merged in."""
    quantization = run.quantization or None
    if run.parent_model is None:
        return run.base.causal_lm(quantization=quantization)
    weights = Path(run.parent_model) / "model"
    if quantization:
        raise ValueError(
            "training on a parent model with a quantized base is not supported: the parent "
            "adapter would have to be merged into 4/8-bit weights"
        )
    if (weights / "adapter_config.json").is_file():
        from peft import PeftModel

        base = run.base.causal_lm()
        return PeftModel.from_pretrained(base, str(weights)).merge_and_unload()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(weights), use_safetensors=True)


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
    if peft.get("type") != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=int(peft["r"]),
        lora_alpha=peft["alpha"],
        lora_dropout=float(peft["dropout"]),
        target_modules=list(peft["target_modules"]) or "all-linear",
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
