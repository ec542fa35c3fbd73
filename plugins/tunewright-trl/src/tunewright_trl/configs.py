"""One config dataclass per training method: the job's ``method_config`` is parsed into it.

Only method-specific knobs live here; what every method shares (steps, learning rate, batch
size, max length, packing, ...) is the job spec's ``hyperparameters``. Unknown keys are
rejected by the trainer before the job is queued; ``__post_init__`` names the field and the bad
value, TRL style.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

_PACKING_STRATEGIES: Final = ("wrapped", "bfd")
_DPO_LOSSES: Final = ("sigmoid", "hinge", "ipo", "robust")
_RL_ALGORITHMS: Final = ("rloo", "grpo")


@dataclass
class SftConfig:
    packing_strategy: str = field(
        default="wrapped",
        metadata={
            "help": "How examples are packed when `hyperparameters.packing` is on: `wrapped` "
            "(concatenate and cut, fastest on CPU) or `bfd` (best-fit decreasing, no example is "
            "cut)."
        },
    )
    neftune_noise_alpha: float | None = field(
        default=None,
        metadata={"help": "NEFTune embedding noise; None disables it."},
    )

    def __post_init__(self) -> None:
        if self.packing_strategy not in _PACKING_STRATEGIES:
            raise ValueError(
                f"`packing_strategy` must be one of {', '.join(_PACKING_STRATEGIES)}; "
                f"got {self.packing_strategy!r}"
            )
        if self.neftune_noise_alpha is not None and self.neftune_noise_alpha <= 0:
            raise ValueError(
                f"`neftune_noise_alpha` must be > 0 or None; got {self.neftune_noise_alpha}"
            )


@dataclass
class DpoConfig:
    beta: float = field(
        default=0.1,
        metadata={"help": "Strength of the KL penalty towards the reference model."},
    )
    loss_type: str = field(
        default="sigmoid",
        metadata={"help": f"DPO loss: one of {', '.join(_DPO_LOSSES)}."},
    )

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"`beta` must be > 0; got {self.beta}")
        if self.loss_type not in _DPO_LOSSES:
            raise ValueError(
                f"`loss_type` must be one of {', '.join(_DPO_LOSSES)}; got {self.loss_type!r}"
            )


@dataclass
class RewardConfig:
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={"help": "Weight of the auxiliary loss that keeps rewards centred on 0."},
    )

    def __post_init__(self) -> None:
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ValueError(
                "`center_rewards_coefficient` must be >= 0 or None; "
                f"got {self.center_rewards_coefficient}"
            )


@dataclass
class RlhfConfig:
    algorithm: str = field(
        default="rloo",
        metadata={"help": "Online RL algorithm: `rloo` or `grpo` (TRL 1.16 has no PPO)."},
    )
    num_generations: int = field(
        default=4,
        metadata={"help": "Completions sampled per prompt (the group the baseline is taken over)."},
    )
    max_completion_length: int = field(
        default=16,
        metadata={"help": "Tokens generated per completion."},
    )
    beta: float = field(
        default=0.0,
        metadata={"help": "KL coefficient towards the reference policy (0 = no reference)."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})

    def __post_init__(self) -> None:
        if self.algorithm not in _RL_ALGORITHMS:
            raise ValueError(
                f"`algorithm` must be one of {', '.join(_RL_ALGORITHMS)}; got {self.algorithm!r}"
            )
        if self.num_generations < 2:
            raise ValueError(f"`num_generations` must be >= 2; got {self.num_generations}")
        if self.max_completion_length < 1:
            raise ValueError(
                f"`max_completion_length` must be >= 1; got {self.max_completion_length}"
            )
        if self.beta < 0:
            raise ValueError(f"`beta` must be >= 0; got {self.beta}")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0; got {self.temperature}")


@dataclass
class KtoConfig:
    beta: float = field(
        default=0.1,
        metadata={"help": "Strength of the KL penalty towards the reference model."},
    )
    desirable_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight of desirable (label true) examples."},
    )
    undesirable_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight of undesirable (label false) examples."},
    )

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"`beta` must be > 0; got {self.beta}")
        for name in ("desirable_weight", "undesirable_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0; got {getattr(self, name)}")
