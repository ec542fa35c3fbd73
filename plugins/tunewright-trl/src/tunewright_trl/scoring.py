"""Metrics that need the model itself, not only its generated text: ``perplexity``,
``preference_accuracy`` and ``generation_smoke``.

They are registered with ``needs="model"``: the evaluator calls
``metric.score_model(base=, weights=, tokenizer=, method=, prompts=, references=, rejected=,
max_new_tokens=, batch_size=)`` once per evaluated model with the same arguments the ``local``
generator gets (``base`` a base-model plugin object, ``weights`` the trained folders root
first, ``tokenizer`` the folder whose ``tokenizer/`` the version uses, ``method`` the training
method of the version, empty for a bare base model). ``score_model`` returns one row of numbers
per sample; ``aggregate(rows)`` turns any subset of rows into the metric's value, which is what
the evaluator's bootstrap resamples.

Tokenisation follows TRL so that numbers mean what they mean in training: the prompt is the
chat template with the generation prompt, the answer is what the template renders after it
(the answer, the end-of-turn EOS and what the template puts after it), and where the two
tokenisations disagree at the boundary the answer starts at their common prefix, exactly as
``trl.DPOTrainer`` does. A reward model scores the whole conversation like
``trl.RewardTrainer`` (its score is read at the last non-padding token).

- ``perplexity``: ``exp(sum of answer-token NLL / answer tokens)`` over the samples, each
  answer conditioned on its prompt (token-level, answer tokens only).
- ``preference_accuracy``: share of held-out pairs where the model prefers ``chosen`` over
  ``rejected`` (strictly, like TRL's ``rewards/accuracies``). A reward model compares its
  scores; a DPO model its implicit reward ``beta * (log p_policy - log p_ref)`` with the
  parent model (the version it was trained from, or the bare base) as the reference; any other
  model its mean log-probability per answer token (length-normalised: a summed log-likelihood
  prefers the shorter answer whatever it says, and held-out rejected answers are often the
  short vague ones).
- ``generation_smoke``: share of greedy answers that end with EOS within the token budget and
  carry no chat-template leftovers (special tokens such as ``<|im_start|>``, role headers).

Each metric takes ``device`` (``auto``: CUDA when available) and ``dtype`` (``auto``: the weights
as loaded) params, placed by :func:`tunewright_trl.generation.place`: on CPU nothing changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewright_trl.generation import (
    check_placement,
    input_device,
    load_causal_lm,
    load_tokenizer,
    place,
)

Messages = Sequence[dict[str, str]]
Rows = Sequence[Sequence[float]]

DEFAULT_BETA = 0.1

#: role headers and turn markers of common chat templates (ChatML, Llama 3, Mistral, Gemma)
_TEMPLATE_LEFTOVERS = re.compile(
    r"<\|[a-z_]{2,20}\|>|\[/?INST\]|<(start|end)_of_turn>|<</?SYS>>"
    r"|(^|\n)\s*(system|user|assistant)\s*(\n|$)",
    re.IGNORECASE,
)


# --- tokenisation and scoring primitives (torch is imported inside) ----------------------


def _chat_ids(tokenizer: Any, messages: Messages, **kwargs: Any) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=True, return_dict=True, **kwargs
    )
    return list(encoded["input_ids"])


def prompt_and_answer_ids(
    tokenizer: Any, prompt: Messages, answer: str
) -> tuple[list[int], list[int]]:
    """``(prompt ids, answer ids)`` the way ``trl.DPOTrainer`` splits a conversation."""
    prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True)
    full_ids = _chat_ids(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
    common = 0
    for a, b in zip(prompt_ids, full_ids, strict=False):
        if a != b:
            break
        common += 1
    return full_ids[:common], full_ids[common:]


def answer_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    answers: Sequence[str],
    *,
    batch_size: int = 8,
) -> list[tuple[float, int]]:
    """Per sample: the summed log-probability of the answer tokens given the prompt, and how
    many answer tokens there are."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pairs = [prompt_and_answer_ids(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    out: list[tuple[float, int]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        width = max(len(p) + len(a) for p, a in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        answer_mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (p, a) in enumerate(chunk):  # right padding: positions stay 0..n-1
            ids[row, : len(p) + len(a)] = torch.tensor(p + a)
            attention[row, : len(p) + len(a)] = 1
            answer_mask[row, len(p) : len(p) + len(a)] = True
        on = input_device(model)
        ids, attention, answer_mask = ids.to(on), attention.to(on), answer_mask.to(on)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attention).logits.float()
        # the token at position t is predicted by the logits at t - 1
        logps = torch.log_softmax(logits[:, :-1], dim=-1)
        token_logps = logps.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        mask = answer_mask[:, 1:]
        sums = (token_logps * mask).sum(dim=1)
        counts = mask.sum(dim=1)
        out += [(float(s), int(c)) for s, c in zip(sums, counts, strict=True)]
    return out


def reward_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    answers: Sequence[str],
    *,
    batch_size: int = 8,
) -> list[float]:
    """A sequence-classification reward model's score of each whole conversation."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.config.pad_token_id = pad
    rows = [
        _chat_ids(tokenizer, [*p, {"role": "assistant", "content": a}])
        for p, a in zip(prompts, answers, strict=True)
    ]
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, r in enumerate(chunk):
            ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
        on = input_device(model)
        with torch.no_grad():
            logits = model(input_ids=ids.to(on), attention_mask=attention.to(on)).logits
        out += [float(v) for v in logits[:, 0]]
    return out


def load_reward_model(base: Any, weights: Sequence[Path]) -> Any:
    """A reward model version the way the trainer trained it (methods.Reward): the base's
    sequence classifier with the version's adapter merged, or its full weights."""
    folder = Path(weights[-1]) / "model"
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(base.sequence_classifier(), str(folder))
        model = model.merge_and_unload()
    else:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), use_safetensors=True
        )
    model.eval()
    return model


# --- the metrics -------------------------------------------------------------------------


class ModelMetric:
    """Base of the metrics registered with ``needs="model"``; see the module docstring."""

    device: str = "auto"
    dtype: str = "auto"

    def _placement(self, device: str, dtype: str) -> None:
        check_placement(device, dtype)
        self.device, self.dtype = device, dtype

    def _place(self, model: Any) -> Any:
        """The model on this metric's device; the loaded dtype unless ``dtype`` says otherwise."""
        return place(model, device=self.device, dtype=self.dtype)

    def score_model(
        self,
        *,
        base: Any,
        weights: Sequence[Path],
        tokenizer: Path,
        method: str,
        prompts: Sequence[Messages],
        references: Sequence[str],
        rejected: Sequence[str | None],
        max_new_tokens: int,
        batch_size: int,
    ) -> list[list[float]]:
        raise NotImplementedError

    def aggregate(self, rows: Rows) -> float:
        """Mean of the first column (the metrics below are shares unless they override it)."""
        return sum(r[0] for r in rows) / len(rows) if rows else 0.0


class Perplexity(ModelMetric):
    """Rows: ``[answer NLL sum, answer tokens]``."""

    def __init__(self, *, device: str = "auto", dtype: str = "auto", **params: Any) -> None:
        if params:
            raise ValueError(f"perplexity takes only device and dtype, got {sorted(params)}")
        self._placement(device, dtype)

    def score_model(self, **kw: Any) -> list[list[float]]:
        tok = load_tokenizer(kw["tokenizer"])
        model = self._place(load_causal_lm(kw["base"], kw["weights"]))
        scored = answer_logprobs(
            model, tok, kw["prompts"], kw["references"], batch_size=kw["batch_size"]
        )
        return [[-logp, float(n)] for logp, n in scored]

    def aggregate(self, rows: Rows) -> float:
        tokens = sum(r[1] for r in rows)
        return math.exp(sum(r[0] for r in rows) / tokens) if tokens else float("nan")


class PreferenceAccuracy(ModelMetric):
    """Rows: ``[1 if chosen is preferred else 0, reward margin chosen - rejected]``."""

    def __init__(
        self,
        *,
        beta: float = DEFAULT_BETA,
        device: str = "auto",
        dtype: str = "auto",
        **params: Any,
    ) -> None:
        if params:
            raise ValueError(
                f"preference_accuracy takes only beta, device and dtype, got {sorted(params)}"
            )
        if not float(beta) > 0:
            raise ValueError(f"preference_accuracy beta must be > 0, got {beta!r}")
        self.beta = float(beta)
        self._placement(device, dtype)

    def score_model(self, **kw: Any) -> list[list[float]]:
        rejected = kw["rejected"]
        if any(r is None for r in rejected):
            raise ValueError(
                "preference_accuracy needs preference pairs: every evaluated row must have "
                "prompt, chosen and rejected"
            )
        prompts, chosen = kw["prompts"], kw["references"]
        margins = self.margins(
            base=kw["base"],
            weights=list(kw["weights"]),
            tokenizer=kw["tokenizer"],
            method=kw["method"],
            prompts=prompts,
            chosen=chosen,
            rejected=[str(r) for r in rejected],
            batch_size=kw["batch_size"],
        )
        return [[1.0 if m > 0 else 0.0, m] for m in margins]

    def margins(
        self,
        *,
        base: Any,
        weights: list[Path],
        tokenizer: Path,
        method: str,
        prompts: Sequence[Messages],
        chosen: Sequence[str],
        rejected: Sequence[str],
        batch_size: int,
    ) -> list[float]:
        """reward(chosen) - reward(rejected) for each pair, by the model's kind."""
        tok = load_tokenizer(tokenizer)
        tok.padding_side = "right"
        if method == "reward":
            rm = self._place(load_reward_model(base, weights))
            good = reward_scores(rm, tok, prompts, chosen, batch_size=batch_size)
            bad = reward_scores(rm, tok, prompts, rejected, batch_size=batch_size)
            return [g - b for g, b in zip(good, bad, strict=True)]
        policy = self._place(load_causal_lm(base, weights))
        scored_good = answer_logprobs(policy, tok, prompts, chosen, batch_size=batch_size)
        scored_bad = answer_logprobs(policy, tok, prompts, rejected, batch_size=batch_size)
        if method != "dpo":  # mean log-probability per answer token
            return [
                g / max(ng, 1) - b / max(nb, 1)
                for (g, ng), (b, nb) in zip(scored_good, scored_bad, strict=True)
            ]
        good, bad = [s for s, _ in scored_good], [s for s, _ in scored_bad]
        # DPO: the implicit reward against the model it was trained from
        del policy  # one model on the device at a time
        ref = self._place(load_causal_lm(base, weights[:-1]))
        ref_good = [s for s, _ in answer_logprobs(ref, tok, prompts, chosen, batch_size=batch_size)]
        ref_bad = [
            s for s, _ in answer_logprobs(ref, tok, prompts, rejected, batch_size=batch_size)
        ]
        return [
            self.beta * (g - rg) - self.beta * (b - rb)
            for g, rg, b, rb in zip(good, ref_good, bad, ref_bad, strict=True)
        ]


def smoke_check(new_ids: Sequence[int], tokenizer: Any) -> tuple[bool, bool]:
    """``(stopped at EOS, clean)`` for one generated continuation (prompt excluded)."""
    eos = tokenizer.eos_token_id
    ids = list(new_ids)
    stopped = eos in ids
    if stopped:  # generate() pads a finished answer after its EOS: cut there
        ids = ids[: ids.index(eos)]
    text = tokenizer.decode(ids, skip_special_tokens=False)
    specials = [t for t in tokenizer.all_special_tokens if t and t != tokenizer.pad_token]
    clean = not any(t in text for t in specials) and not _TEMPLATE_LEFTOVERS.search(text)
    return stopped, clean


class GenerationSmoke(ModelMetric):
    """Rows: ``[ok, stopped at EOS, no template leftovers]`` (1/0 each); ok needs both."""

    def __init__(self, *, device: str = "auto", dtype: str = "auto", **params: Any) -> None:
        if params:
            raise ValueError(f"generation_smoke takes only device and dtype, got {sorted(params)}")
        self._placement(device, dtype)

    def score_model(self, **kw: Any) -> list[list[float]]:
        import torch

        tok = load_tokenizer(kw["tokenizer"])
        model = self._place(load_causal_lm(kw["base"], kw["weights"]))
        on = input_device(model)
        texts = [
            tok.apply_chat_template(
                [dict(m) for m in p], tokenize=False, add_generation_prompt=True
            )
            for p in kw["prompts"]
        ]
        rows: list[list[float]] = []
        batch_size = kw["batch_size"]
        for start in range(0, len(texts), batch_size):
            batch = tok(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(on)
            with torch.no_grad():
                output = model.generate(
                    **batch,
                    max_new_tokens=kw["max_new_tokens"],
                    do_sample=False,
                    eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id,
                )
            for new in output[:, batch["input_ids"].shape[1] :].tolist():
                stopped, clean = smoke_check(new, tok)
                rows.append([float(stopped and clean), float(stopped), float(clean)])
        return rows
