"""Shingles and MinHash signatures, vectorised over batches of documents.

A document's shingles are its n-grams (default 5) of consecutive tokens, where tokens are the runs
of word characters (Python's `\\w`, Unicode-aware) of the lowercased text, as StarCoder2's
near-dedup split it on non-word characters. Each shingle is a 64-bit hash; permutation j maps it
to (a_j * x + b_j) mod 2^64 with odd a_j and random b_j drawn from a fixed seed; the signature
keeps, per permutation, the top 32 bits of the minimum (the minimum of the top bits equals the top
bits of the minimum, so nothing is lost by truncating after the min).

Why compiled loops and not numpy ufuncs: with ufuncs every step (multiply, add, minimum, segment
reduce) is a pass over a (shingles x 256) buffer, measured here at 6 MB/s end to end; a numba
kernel keeps the 256 running minima of a document in registers/L1 and LLVM vectorises the inner
permutation loop, so the whole batch is one pass over its text. The text work before it (lowercase,
UTF-32 code points, `\\w` classification) is done by CPython and numpy over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numba
import numpy as np

from codemill.hashing import TOKEN_P, mix64, word_char_table

_SEPARATOR = "\x00"  # a non-word character between documents of a batch


@dataclass(frozen=True)
class MinHashParams:
    num_perm: int = 256
    ngram: int = 5
    seed: int = 42

    @property
    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        return _permutations(self.num_perm, self.seed)


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def _code_points(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lowercased batch as one code-point array, its word-character mask and document starts."""
    lowered = [t.lower() for t in texts]
    joined = _SEPARATOR.join(lowered)
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    word = word_char_table()[cps]
    lengths = np.fromiter((len(t) + 1 for t in lowered), dtype=np.int64, count=len(lowered))
    starts = np.zeros(len(lowered) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    starts[-1] = len(cps)  # the last document has no separator after it
    return cps, word, starts


_U = numba.uint64


@numba.njit(cache=True)
def _shingle_kernel(cps, word, doc_starts, ngram, weights, out_hashes, out_docs):
    """Writes the hash of every n-gram of tokens (in text order, repeats included) and its
    document index; returns how many were written. Shingles never cross documents."""
    n_docs = doc_starts.shape[0] - 1
    # The last n token hashes, each stored twice (at slot and slot + n) so the n-gram starting at
    # any slot is a contiguous run: no division per term.
    ring = np.zeros(2 * ngram, dtype=np.uint64)
    written = 0
    for d in range(n_docs):
        tokens = 0
        slot = 0  # == tokens % ngram
        h = _U(0)
        length = 0
        end = doc_starts[d + 1]
        for i in range(doc_starts[d], end):
            if word[i]:
                h = h * TOKEN_P + _U(cps[i])
                length += 1
            if length > 0 and (i + 1 == end or not word[i + 1]):
                token = mix64(h + _U(length))
                ring[slot] = token
                ring[slot + ngram] = token
                tokens += 1
                slot += 1
                if slot == ngram:
                    slot = 0
                h = _U(0)
                length = 0
                if tokens >= ngram:
                    s = _U(0)
                    for j in range(ngram):  # the oldest of the last n tokens sits at `slot`
                        s += weights[j] * ring[slot + j]
                    out_hashes[written] = mix64(s)
                    out_docs[written] = d
                    written += 1
    return written


@numba.njit(cache=True)
def _minhash_kernel(hashes, bounds, a, b, out):
    """out[d, j] = min over document d's shingles x of a[j] * x + b[j] (mod 2^64).

    Eight shingles per pass over the permutations: each running minimum is loaded and stored
    once per eight updates, and the eight products are independent, so the loop is bound by the
    (AVX2-emulated) 64-bit multiplies rather than by store latency; 2x the one-at-a-time loop."""
    num_perm = a.shape[0]
    for d in range(bounds.shape[0] - 1):
        row = out[d]
        i = bounds[d]
        end = bounds[d + 1]
        while i + 8 <= end:
            x0, x1, x2, x3 = hashes[i], hashes[i + 1], hashes[i + 2], hashes[i + 3]
            x4, x5, x6, x7 = hashes[i + 4], hashes[i + 5], hashes[i + 6], hashes[i + 7]
            for j in range(num_perm):
                aj = a[j]
                bj = b[j]
                m01 = min(aj * x0 + bj, aj * x1 + bj)
                m23 = min(aj * x2 + bj, aj * x3 + bj)
                m45 = min(aj * x4 + bj, aj * x5 + bj)
                m67 = min(aj * x6 + bj, aj * x7 + bj)
                row[j] = min(row[j], min(min(m01, m23), min(m45, m67)))
            i += 8
        while i < end:
            x = hashes[i]
            for j in range(num_perm):
                row[j] = min(row[j], a[j] * x + b[j])
            i += 1


@lru_cache(maxsize=8)
def _ngram_weights(ngram: int) -> np.ndarray:
    # Distinct odd weights so the shingle hash depends on token order.
    rng = np.random.Generator(np.random.PCG64(0x5EED))
    return rng.integers(0, np.iinfo(np.uint64).max, ngram, dtype=np.uint64, endpoint=True) | np.uint64(1)


def shingle_hashes(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64[S], document index int64[S]) of every shingle of a batch, in text order."""
    if not texts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    cps, word, starts = _code_points(texts)
    capacity = max(1, len(cps) // 2 + 1)  # a token needs >= 1 word char and >= 1 separator
    hashes = np.empty(capacity, dtype=np.uint64)
    docs = np.empty(capacity, dtype=np.int64)
    n = _shingle_kernel(cps, word, starts, ngram, _ngram_weights(ngram), hashes, docs)
    return hashes[:n], docs[:n]


def shingle_sets(texts: Sequence[str], ngram: int = 5) -> list[np.ndarray]:
    """Per document, its sorted distinct shingle hashes (the set whose Jaccard we verify)."""
    hashes, docs = shingle_hashes(texts, ngram)
    bounds = np.searchsorted(docs, np.arange(len(texts) + 1))  # docs is sorted: text order
    return [np.unique(hashes[bounds[i] : bounds[i + 1]]) for i in range(len(texts))]


def signatures_from_shingles(hashes: np.ndarray, docs: np.ndarray, n_docs: int, params: MinHashParams) -> np.ndarray:
    a, b = params.permutations
    sig = np.full((n_docs, params.num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    _minhash_kernel(hashes, np.searchsorted(docs, np.arange(n_docs + 1)), a, b, sig)
    return (sig >> np.uint64(32)).astype(np.uint32)


def signatures(texts: Sequence[str], params: MinHashParams = MinHashParams()) -> np.ndarray:
    """uint32[len(texts), num_perm] MinHash signatures. A document with fewer tokens than one
    shingle has no shingles; its row is all 0xFFFFFFFF (see `has_shingles`)."""
    hashes, docs = shingle_hashes(texts, params.ngram)
    return signatures_from_shingles(hashes, docs, len(texts), params)


def has_shingles(sigs: np.ndarray) -> np.ndarray:
    """bool per row: did the document have at least one shingle? (An empty one keeps every
    minimum at the maximum; for a real one that has probability 2^-(32 * num_perm).)"""
    return (sigs != np.iinfo(np.uint32).max).any(axis=1)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted distinct hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = np.intersect1d(a, b, assume_unique=True).shape[0]
    return inter / (len(a) + len(b) - inter)


def sketch_batch(batch: list[tuple[str, str]], params: MinHashParams) -> list[tuple[str, np.ndarray | None]]:
    """(key, text) pairs -> (key, signature), or (key, None) for a text shorter than one shingle.
    Lives here, not in the Beam layer, so local pool workers import only numpy and numba."""
    sigs = signatures([text for _, text in batch], params)
    present = has_shingles(sigs)
    return [(key, sigs[i] if present[i] else None) for i, (key, _) in enumerate(batch)]
