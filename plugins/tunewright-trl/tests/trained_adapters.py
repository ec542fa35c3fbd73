"""Trained folders that serving tests answer with: LoRA adapters on a ``tiny:`` base, each
trained (a few hundred steps, seconds on a CPU) to give its own answer to the same question,
so a test can tell which model version answered. ``parent=`` trains on the parent merged
into the base, as the trainer does for DPO after SFT."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

QUESTION = "I was charged twice for my plan"
ANSWERS = {
    "refund": "Refund issued for the duplicate charge.",
    "escalate": "Escalated to the billing team today.",
    "ships": "Your order ships tomorrow morning.",
}
BASE_MODEL = "tiny:llama-xxs"


@dataclass(frozen=True)
class TrainedFolder:
    name: str
    answer: str
    folder: Path  # model/ (PEFT adapter) and tokenizer/, as the trainer writes them


def train_adapter(answer: str, out: Path, *, steps: int = 300, parent: Path | None = None) -> Path:
    """A LoRA adapter on the tiny base (or on ``parent`` merged into it) that answers
    QUESTION with ``answer`` (greedy)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from tunewright_trl.models import TinyBaseModel

    base = TinyBaseModel("llama-xxs", seed=0, corpus=[QUESTION, *ANSWERS.values()])
    tok = base.tokenizer()
    torch.manual_seed(0)
    start = base.causal_lm()
    if parent is not None:
        start = PeftModel.from_pretrained(start, str(parent / "model")).merge_and_unload()
    model = get_peft_model(start, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    turns = [{"role": "user", "content": QUESTION}]
    prompt = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(
        [*turns, {"role": "assistant", "content": answer}], tokenize=False
    )
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tok(full, add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100  # loss on the answer (and its EOS) only
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(str(out / "model"))
    tok.save_pretrained(str(out / "tokenizer"))
    return out
