"""Base-model sources: ``tiny:<preset>`` (built here, deterministically) and ``hf:<id-or-path>``.

The trainer calls a base-model factory as ``factory(reference, corpus=..., seed=...)`` and gets
a :class:`BaseModel`. Construction is cheap (no torch import): the service uses
:meth:`BaseModel.preflight` and :meth:`BaseModel.parameter_count` before queueing a job, and
only the job's child process loads weights.

``tiny:`` models are small Llama-architecture models: a byte-level BPE tokenizer trained on the
job's own texts (plus a small shipped corpus, so it never starts empty), the ChatML template of
:mod:`tunewright_trl.chat` with ``<|im_end|>`` as EOS, and weights drawn from a seeded
generator. The weights depend only on preset and seed (the vocabulary size is fixed by the
preset), so a LoRA adapter trained on one always fits a rebuilt one.

``hf:`` loads any local transformers causal LM: ``trust_remote_code`` off, safetensors only,
local files only (no hub here), optional 4/8-bit bitsandbytes quantization for QLoRA.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tunewright.core import model_cache
from tunewright_trl.chat import (
    BOS_TOKEN,
    CHATML_TEMPLATE,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
)


@dataclass(frozen=True, slots=True)
class TinyPreset:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 512


TINY_PRESETS: Final[Mapping[str, TinyPreset]] = {
    # ~0.15 M parameters: unit tests
    "llama-xxs": TinyPreset(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                            vocab_size=512),
    # ~0.4 M parameters: service tests, the CPU demo
    "llama-xs": TinyPreset(hidden_size=96, num_layers=3, num_heads=4, intermediate_size=192,
                           vocab_size=768),
    # ~0.9 M parameters: the bench
    "llama-s": TinyPreset(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=256,
                          vocab_size=1024),
}  # fmt: skip

# A little English so the tokenizer has merges for common words even on a tiny dataset.
_SHIPPED_CORPUS: Final = (
    "Hello, how can I help you today?",
    "Thank you for contacting support. Your order has shipped and will arrive soon.",
    "Please reset your password from the account settings page.",
    "The quick brown fox jumps over the lazy dog.",
    "I am sorry for the trouble; a refund has been issued to your card.",
)

Quantization = Mapping[str, Any]


class BaseModel:
    """What a base-model factory returns; see the module docstring."""

    reference: str
    #: chat template and EOS of the model version trained from this base
    chat_template: str | None
    eos_token: str | None

    def preflight(self) -> list[tuple[str, str]]:
        """Cheap checks before queueing: ``(field, reason)`` pairs, empty when fine."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        """Parameter count for the memory estimate (from the config, no weights loaded)."""
        raise NotImplementedError

    def tokenizer(self) -> Any:
        """A ``PreTrainedTokenizerFast`` with a chat template, EOS and pad token."""
        raise NotImplementedError

    def causal_lm(self, *, quantization: Quantization | None = None) -> Any:
        raise NotImplementedError

    def sequence_classifier(self) -> Any:
        """The same backbone with a freshly seeded scalar head (reward models)."""
        raise NotImplementedError

    def weights_sha256(self) -> str:
        """sha256 of the base weights a job starts from, for its lineage (may read them all)."""
        raise NotImplementedError


class TinyBaseModel(BaseModel):
    def __init__(self, reference: str, *, corpus: Iterable[str] = (), seed: int = 0) -> None:
        self.reference = reference
        self.preset_name = reference
        self.preset = TINY_PRESETS.get(reference)
        self.corpus = tuple(corpus)
        self.seed = seed
        self.chat_template = CHATML_TEMPLATE
        self.eos_token = EOS_TOKEN
        self._tokenizer: Any = None

    def preflight(self) -> list[tuple[str, str]]:
        if self.preset is None:
            return [
                (
                    "base_model",
                    f"unknown tiny preset {self.reference!r}; presets: {', '.join(TINY_PRESETS)}",
                )
            ]
        return []

    def _require_preset(self) -> TinyPreset:
        if self.preset is None:
            raise ValueError(self.preflight()[0][1])
        return self.preset

    def parameter_count(self) -> int:
        p = self._require_preset()
        per_layer = 4 * p.hidden_size**2 + 3 * p.hidden_size * p.intermediate_size
        return 2 * p.vocab_size * p.hidden_size + p.num_layers * per_layer

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = build_tiny_tokenizer(
                list(_SHIPPED_CORPUS) + list(self.corpus), self._require_preset().vocab_size
            )
        return self._tokenizer

    def _config(self, **extra: Any) -> Any:
        from transformers import LlamaConfig

        p = self._require_preset()
        tok = self.tokenizer()
        return LlamaConfig(
            vocab_size=p.vocab_size,
            hidden_size=p.hidden_size,
            intermediate_size=p.intermediate_size,
            num_hidden_layers=p.num_layers,
            num_attention_heads=p.num_heads,
            num_key_value_heads=p.num_heads,
            max_position_embeddings=p.max_position_embeddings,
            bos_token_id=tok.convert_tokens_to_ids(BOS_TOKEN),
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
            **extra,
        )

    def causal_lm(self, *, quantization: Quantization | None = None) -> Any:
        import torch
        from transformers import LlamaForCausalLM

        config = self._config()
        torch.manual_seed(self.seed)
        model = LlamaForCausalLM(config)
        if quantization:
            model = _quantize_via_disk(model, self.tokenizer(), quantization)
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
        return model

    def sequence_classifier(self) -> Any:
        import torch
        from transformers import LlamaForSequenceClassification

        config = self._config(num_labels=1)
        torch.manual_seed(self.seed)
        return LlamaForSequenceClassification(config)

    def weights_sha256(self) -> str:
        # drawn, not read: hash the tensors the preset and seed produce (a 0.15-1 M model)
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(self.causal_lm().state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        return digest.hexdigest()


class HfBaseModel(BaseModel):
    def __init__(self, reference: str, *, corpus: Iterable[str] = (), seed: int = 0) -> None:
        del corpus  # a real model brings its own tokenizer
        self.reference = reference
        self.path = Path(reference)
        self.seed = seed
        self._tokenizer: Any = None
        self.chat_template, self.eos_token = self._read_tokenizer_config()

    def _read_tokenizer_config(self) -> tuple[str | None, str | None]:
        file = self.path / "tokenizer_config.json"
        if not file.is_file():
            return None, None
        data = json.loads(file.read_text())
        eos = data.get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        template = data.get("chat_template")
        jinja = self.path / "chat_template.jinja"
        if template is None and jinja.is_file():
            template = jinja.read_text()
        return (template if isinstance(template, str) else None), eos

    def preflight(self) -> list[tuple[str, str]]:
        if not self.path.is_dir():
            return [
                (
                    "base_model",
                    f"hf:{self.reference} is not a local model folder (no hub access: "
                    "download the model first and give its path)",
                )
            ]
        problems = []
        if not any(self.path.glob("*.safetensors")):
            problems.append(("base_model", "no *.safetensors weights (only safetensors load)"))
        if not self.chat_template:
            problems.append(("base_model", "the tokenizer has no chat template"))
        elif not self.eos_token:
            problems.append(("base_model", "the tokenizer has no eos_token"))
        return problems

    def parameter_count(self) -> int:
        cfg = json.loads((self.path / "config.json").read_text())
        h = int(cfg.get("hidden_size", 0))
        layers = int(cfg.get("num_hidden_layers", 0))
        inter = int(cfg.get("intermediate_size", 4 * h))
        vocab = int(cfg.get("vocab_size", 0))
        heads = int(cfg.get("num_attention_heads", 1)) or 1
        kv_heads = int(cfg.get("num_key_value_heads", heads))
        head_dim = int(cfg.get("head_dim") or h // heads)
        # q and o are h x h; k and v shrink with grouped-query attention
        attention = 2 * h * h + 2 * h * kv_heads * head_dim
        embeddings = (1 if cfg.get("tie_word_embeddings") else 2) * vocab * h
        return embeddings + layers * (attention + 3 * h * inter)

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(
                self.path, trust_remote_code=False, local_files_only=True
            )
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            self._tokenizer = tok
        return self._tokenizer

    def causal_lm(self, *, quantization: Quantization | None = None) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            self.path,
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
            **_quantization_kwargs(quantization),
        )

    def sequence_classifier(self) -> Any:
        import torch
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(self.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path,
            num_labels=1,
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
        )
        model.config.pad_token_id = self.tokenizer().pad_token_id
        return model

    def weights_sha256(self) -> str:
        return model_cache.files_sha256(sorted(self.path.glob("*.safetensors")), self.path)


def build_tiny_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``; same texts, same tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=TINY_PRESETS["llama-s"].max_position_embeddings,
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _quantization_kwargs(quantization: Quantization | None) -> dict[str, Any]:
    if not quantization:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    bits = int(quantization["bits"])
    compute = str(quantization.get("compute_dtype") or "auto")
    # "auto" is resolved to the training precision by the method; float32 when it was not
    dtype = getattr(torch, "float32" if compute == "auto" else compute)
    if bits == 4:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=str(quantization.get("quant_type") or "nf4"),
            bnb_4bit_use_double_quant=bool(quantization.get("double_quant", True)),
            bnb_4bit_compute_dtype=dtype,
        )
    elif bits == 8:
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        raise ValueError(f"quantization bits must be 4 or 8, got {bits}")
    device_map = "auto" if torch.cuda.is_available() else "cpu"
    return {"quantization_config": config, "device_map": device_map}


def _quantize_via_disk(model: Any, tokenizer: Any, quantization: Quantization) -> Any:
    """bitsandbytes quantizes at load time, so a built model goes through a temp folder."""
    import tempfile

    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory(prefix="tw-tiny-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        return AutoModelForCausalLM.from_pretrained(
            tmp, use_safetensors=True, local_files_only=True, **_quantization_kwargs(quantization)
        )
