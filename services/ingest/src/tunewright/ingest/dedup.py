"""Duplicate detection: exact (normalised hash) and near (MinHash LSH, verified).

Exact: lower-case, NFKC, punctuation dropped, whitespace collapsed, then blake2b; a row whose
key was seen is a duplicate of the first row with that key.

Near: word 3-gram shingles -> MinHash (``num_perm`` permutations, datasketch) -> banded LSH at
``threshold``; a candidate counts only if the Jaccard similarity estimated from the two full
signatures reaches ``threshold`` too (template look-alikes produce many band collisions that
are not duplicates). The first row of a cluster is kept, later ones are duplicates of it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from typing import Any

import numpy as np

_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


class ExactDeduper:
    def __init__(self) -> None:
        # 8-byte digests as ints: a quarter of the memory of bytes keys; a collision among a
        # million rows has a chance of about 3e-8
        self._first: dict[int, int] = {}

    def check(self, text: str, line: int) -> int | None:
        """The line this text duplicates, or None (and it is remembered)."""
        digest = hashlib.blake2b(normalise(text).encode(), digest_size=8).digest()
        first = self._first.setdefault(int.from_bytes(digest, "big"), line)
        return None if first == line else first


class NearDeduper:
    """MinHash signatures from datasketch, banded LSH kept compact.

    datasketch's ``MinHashLSH`` keeps a set object per bucket and every band key twice (about
    4 KB per row); here a band bucket is one dict slot holding a row index (a list only when
    unrelated rows share a bucket) and all signatures live in one growing uint array, about
    1.3 KB per row. Band and row counts are datasketch's optimum for the threshold.
    """

    _GROW = 65536

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 3) -> None:
        from datasketch import MinHash
        from datasketch.lsh import _optimal_param

        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.bands, self.rows_per_band = _optimal_param(threshold, num_perm, 0.5, 0.5)
        self._minhash_cls = MinHash
        self._template = MinHash(num_perm=num_perm, seed=1)
        self._signatures = np.empty((0, num_perm), dtype=self._template.hashvalues.dtype)
        self._lines: list[int] = []
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        #: kept line -> lines found to duplicate it
        self.clusters: dict[int, list[int]] = defaultdict(list)

    def _signature(self, text: str) -> np.ndarray[Any, Any]:
        words = normalise(text).split()
        n = self.ngram
        shingles = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
        m = self._minhash_cls(
            num_perm=self.num_perm,
            seed=1,
            scheme=self._template.scheme,
            permutations=self._template.permutations,
        )
        m.update_batch([s.encode() for s in shingles])
        return m.hashvalues  # type: ignore[no-any-return]

    def _band_keys(self, sig: np.ndarray[Any, Any]) -> list[int]:
        r = self.rows_per_band
        return [hash(sig[b * r : (b + 1) * r].tobytes()) for b in range(self.bands)]

    def check(self, text: str, line: int) -> int | None:
        """The kept line this text nearly duplicates, or None (and it is indexed)."""
        sig = self._signature(text)
        keys = self._band_keys(sig)
        candidates: set[int] = set()
        for bucket, key in zip(self._buckets, keys, strict=True):
            found = bucket.get(key)
            if isinstance(found, int):
                candidates.add(found)
            elif found:
                candidates.update(found)
        if candidates:
            order = sorted(candidates)
            # estimated Jaccard = share of equal signature positions; the most similar wins,
            # the earliest row on ties
            similarity = np.mean(self._signatures[order] == sig, axis=1)
            best = int(np.argmax(similarity))
            if similarity[best] >= self.threshold:
                kept = self._lines[order[best]]
                self.clusters[kept].append(line)
                return kept
        self._add(sig, keys, line)
        return None

    def _add(self, sig: np.ndarray[Any, Any], keys: list[int], line: int) -> None:
        index = len(self._lines)
        if index == len(self._signatures):
            grown = np.empty((index + self._GROW, self.num_perm), dtype=self._signatures.dtype)
            grown[:index] = self._signatures
            self._signatures = grown
        self._signatures[index] = sig
        self._lines.append(line)
        for bucket, key in zip(self._buckets, keys, strict=True):
            found = bucket.get(key)
            if found is None:
                bucket[key] = index
            elif isinstance(found, int):
                bucket[key] = [found, index]
            else:
                found.append(index)

    def cluster_report(self, top: int = 20) -> dict[str, Any]:
        sizes: dict[int, int] = defaultdict(int)
        for members in self.clusters.values():
            sizes[len(members) + 1] += 1
        largest = sorted(self.clusters.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
        return {
            "threshold": self.threshold,
            "num_perm": self.num_perm,
            "bands": self.bands,
            "rows_per_band": self.rows_per_band,
            "shingle": f"word {self.ngram}-grams",
            "clusters": len(self.clusters),
            "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "largest": [{"kept_line": k, "duplicate_lines": v[:50]} for k, v in largest],
        }
