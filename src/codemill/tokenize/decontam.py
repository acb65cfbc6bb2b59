"""Benchmark decontamination: drop training files that contain benchmark material.

Two tests per file, against every task of every benchmark (prompts and solutions):
- exact substring of whitespace-normalised text, as StarCoder did: every run of whitespace becomes
  one space, so re-indented or re-wrapped copies still match. Texts shorter than
  `min_exact_chars` are left to the n-gram test (a one-line solution such as `return a + b` is
  in half the code on earth).
- n-gram overlap: the share of a task's distinct word 13-grams (lowercased `\\w` runs, the dedup
  shingles with n = 13) that the file contains; `ngram_overlap` or more flags it. A file that
  merely shares a few common lines with a task holds a small share of its 13-grams and is kept.

Both tests share one compiled pass over the file's code points (`_scan_kernel`). It normalises
whitespace on the fly and rolls the hash of every 32-character window, looking it up among the
hashes of the patterns' first 32 characters; only a window that is one is compared with its
patterns. A pattern present in the file always hits at its position, so nothing is missed; a hash
collision costs one string compare. In the same pass it hashes the word tokens (lowercased `\\w`
runs, as the dedup shingles) and rolls the hash of every 13 consecutive ones, looking each up
among the benchmark grams. Lookups go through a packed two-row bit table that stays in cache,
then a binary search, so the kernel reports exact members. One pass over the text, with lookups
that stay in cache, is what makes the scan fast (RESULTS.md gives its rate); the kernel releases
the GIL, so threads share one matcher.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numba
import numpy as np

from codemill.drops import drop_reason
from codemill.hashing import TOKEN_P, every_code_point, mix64, word_char_table
from codemill.tokenize.benchmarks import BenchmarkTask
from codemill.tokenize.config import DecontamConfig
from codemill.tokenize.stats import Contaminated, FileIn


def normalise(text: str) -> str:
    return " ".join(text.split())


_ANCHOR = 32


@dataclass(frozen=True)
class HashSet:
    """A set of 64-bit hashes for the scan kernel: a two-row bit table in front of the sorted
    values. Row r marks bits [r*bits, (r+1)*bits) of each hash (a Bloom filter with disjoint hash
    slices, ~16 bits per member: ~6% of lookups pass the first row, ~0.4% both), and only those
    are binary-searched, so the kernel reports exact members, not candidates. Packed bits, not
    bools: the scan looks up every window and every 13-gram, and a row must stay in the core's
    cache (a bool row of 2^24 entries does not fit, and every lookup would be a DRAM miss)."""

    rows: np.ndarray  # uint64[2, 2^bits / 64]
    bits: int
    values: np.ndarray  # sorted uint64

    @classmethod
    def of(cls, hashes: np.ndarray | Iterable[int]) -> HashSet:
        values = np.unique(hashes if isinstance(hashes, np.ndarray) else np.fromiter(hashes, dtype=np.uint64))
        bits = int(min(30, max(12, np.ceil(np.log2(max(1, len(values)) * 16)))))
        rows = np.zeros((2, (1 << bits) // 64), dtype=np.uint64)
        mask = np.uint64((1 << bits) - 1)
        for row in range(2):
            slots = (values >> np.uint64(row * bits)) & mask
            np.bitwise_or.at(
                rows[row], (slots >> np.uint64(6)).astype(np.intp), np.left_shift(np.uint64(1), slots & np.uint64(63))
            )
        return cls(rows, bits, values)


@numba.njit(cache=True, inline="always")
def _member(rows, bits, values, h):
    mask = _U((1 << bits) - 1)
    low = h & mask
    if not (rows[0, low >> _U(6)] >> (low & _U(63))) & _U(1):
        return False
    high = (h >> _U(bits)) & mask
    if not (rows[1, high >> _U(6)] >> (high & _U(63))) & _U(1):
        return False
    at = np.searchsorted(values, h)
    return at < values.shape[0] and values[at] == h


@numba.njit(cache=True)
def _member_of(rows, bits, values, h):  # `_member` callable from Python, for tests
    return _member(rows, bits, values, h)


_U = numba.uint64
_HASH_BASE = np.uint64(0x100000001B3)  # odd, so it has an inverse mod 2^64
_HASH_BASE_INVERSE = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_POWERS: list[np.ndarray] = [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)]  # base^i, base^-i


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    if len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]))
        for which, base in ((0, _HASH_BASE), (1, _HASH_BASE_INVERSE)):
            powers = np.full(size, base, dtype=np.uint64)
            powers[0] = 1
            _POWERS[which] = np.cumprod(powers)  # wraps mod 2^64, as intended
    return _POWERS[0][:n], _POWERS[1][:n]


def _window_hashes(text: str, k: int) -> np.ndarray:
    """Polynomial hash (mod 2^64) of every k-character window of text, by prefix sums: the
    definition `_scan_kernel` rolls, used here for the patterns' anchors."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    n = len(cps)
    if n < k:
        return np.zeros(0, dtype=np.uint64)
    forward, inverse = _powers(n)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(cps * forward, out=prefix[1:])
    return (prefix[k:] - prefix[:-k]) * inverse[: n - k + 1]


@lru_cache(maxsize=1)
def _char_tables() -> tuple[np.ndarray, np.ndarray]:
    """(class uint8[0x110000], lower uint32[0x110000]) for the scan kernel. class bit 0: the code
    point is whitespace as `str.split()` sees it (`re`'s `\\s` is the same set); bit 1: its
    lowercase is a word character (`\\w`, the dedup shingles' definition). lower: its lowercase
    code point (U+0130, the one character whose lowercase is two, maps to its first, `i`). Built
    from CPython's own tables in whole-string passes (~0.1 s on this machine), not a call per code point."""
    every = every_code_point()
    spaces = np.frombuffer(re.sub(r"\s", "\x00", every).encode("utf-32-le", "surrogatepass"), dtype=np.uint32) == 0
    spaces[0] = False  # NUL itself is not whitespace
    lowered = every.replace("\u0130", "i").lower()
    if len(lowered) != len(every):  # a future Unicode with another expanding lowercase
        lowered = "".join(c.lower()[0] for c in every)
    lower = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).copy()
    classes = spaces.astype(np.uint8) | (word_char_table()[lower].astype(np.uint8) << 1)
    return classes, lower


_GRAM_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: the 13-gram hash rolls over token hashes


@numba.njit(cache=True, nogil=True)
def _scan_kernel(
    cps,
    classes,
    lower,
    k,
    base,
    inverse_base,
    anchor_rows,
    anchor_bits,
    anchor_values,
    ngram,
    gram_power,
    gram_rows,
    gram_bits,
    gram_values,
    all_grams,
    out_positions,
    out_anchors,
    out_grams,
):
    """One pass over a text's code points doing the hashing of both tests.

    Exact test: whitespace-normalise on the fly (as `normalise`: a run of whitespace becomes one
    space, none at either end), roll the `_window_hashes` hash of every k-character window of the
    normalised text, and write (normalised position, hash) of each window whose hash is an anchor.
    N-gram test: tokens are the runs of word characters of the lowercased text, each hashed; the
    hash of the last n tokens rolls (g = g * B + newest - oldest * B^n) and is written when it is
    a benchmark gram, or always with `all_grams` (the benchmark side).
    Returns (windows hit, grams written); only as many as the out arrays hold are written."""
    ring = np.zeros(k, dtype=np.uint64)
    slot = 0  # == emitted % k, kept without a division
    h = _U(0)
    power = _U(1)  # base^min(emitted, k - 1): the weight of the newest character
    emitted = 0  # normalised characters so far
    pending_space = False
    anchors = 0
    token_ring = np.zeros(ngram, dtype=np.uint64)
    token_slot = 0
    tokens = 0
    token_hash = _U(0)
    token_length = 0
    g = _U(0)
    grams = 0
    n = cps.shape[0]
    for i in range(n + 1):
        c = cps[i] if i < n else 32  # a space after the end closes the last token
        kind = classes[c]
        if kind & 2:
            token_hash = token_hash * TOKEN_P + _U(lower[c])
            token_length += 1
        elif token_length > 0:
            token = mix64(token_hash + _U(token_length))
            g = g * _GRAM_BASE + token - token_ring[token_slot] * gram_power
            token_ring[token_slot] = token
            token_slot += 1
            if token_slot == ngram:
                token_slot = 0
            tokens += 1
            token_hash = _U(0)
            token_length = 0
            if tokens >= ngram:
                gram = mix64(g)
                if all_grams or _member(gram_rows, gram_bits, gram_values, gram):
                    if grams < out_grams.shape[0]:
                        out_grams[grams] = gram
                    grams += 1
        if i == n:
            break
        if kind & 1:
            pending_space = emitted > 0
            continue
        # The space standing for the run just ended (if any), then this character.
        for step in range(2 if pending_space else 1):
            ch = _U(32) if pending_space and step == 0 else _U(c)
            if emitted < k:
                h += ch * power
                if emitted + 1 < k:
                    power *= base
            else:
                h = (h - ring[slot]) * inverse_base + ch * power
            ring[slot] = ch
            slot += 1
            if slot == k:
                slot = 0
            emitted += 1
            if emitted >= k and _member(anchor_rows, anchor_bits, anchor_values, h):
                if anchors < out_positions.shape[0]:
                    out_positions[anchors] = emitted - k
                    out_anchors[anchors] = h
                anchors += 1
        pending_space = False
    return anchors, grams


_EMPTY = HashSet.of(())


def _code_point_array(text: str) -> np.ndarray:
    """The text's code points for the scan kernel: one byte each when the text is ASCII (most
    code; `isascii` is O(1) on CPython, and the encode is a copy), else four. The byte form
    quarters the memory the kernel streams and halves the encode."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class Decontaminator:
    """Built once per worker from the benchmark tasks; `match(text)` names the first task found."""

    def __init__(self, tasks: list[BenchmarkTask], config: DecontamConfig) -> None:
        self.config = config
        self.tasks = tasks
        self.classes, self.lower = _char_tables()
        patterns: dict[str, set[int]] = defaultdict(set)
        for index, task in enumerate(tasks):
            for text in task.texts:
                pattern = normalise(text)
                if len(pattern) >= config.min_exact_chars:
                    patterns[pattern].add(index)
        self.patterns = patterns
        self.anchor_length = min(_ANCHOR, config.min_exact_chars)
        self.by_anchor: dict[int, list[str]] = defaultdict(list)
        for pattern in sorted(patterns):
            anchor = _window_hashes(pattern[: self.anchor_length], self.anchor_length)[0]
            self.by_anchor[int(anchor)].append(pattern)
        self.anchor_set = HashSet.of(self.by_anchor)
        self.gram_power = np.uint64(pow(int(_GRAM_BASE), config.ngram, 1 << 64))
        # Every task's distinct 13-grams, as arrays sorted by gram: gram_owners[i] is the task of
        # task_grams[i] (numpy, not a dict of ~200,000 lists: the build went from 0.6 to ~0.1 s).
        per_task = []
        for task in tasks:
            cps = _code_point_array("\n".join(task.texts))
            grams = np.empty(len(cps) // 2 + 1, dtype=np.uint64)  # a token takes a character and a separator
            _, found = self._scan(cps, _EMPTY, True, grams)  # all grams: the set is not read
            per_task.append(np.unique(grams[:found]))
        self.ngram_counts = np.array([len(g) for g in per_task], dtype=np.int64)
        task_grams = np.concatenate(per_task) if per_task else np.zeros(0, dtype=np.uint64)
        owners = np.repeat(np.arange(len(tasks), dtype=np.int64), self.ngram_counts)
        order = np.argsort(task_grams, kind="stable")
        self.task_grams, self.gram_owners = task_grams[order], owners[order]
        self.gram_set = HashSet.of(self.task_grams)

    def _scan(
        self,
        cps: np.ndarray,
        gram_set: HashSet,
        all_grams: bool,
        grams: np.ndarray,
        positions: np.ndarray | None = None,
        anchors: np.ndarray | None = None,
    ) -> tuple[int, int]:
        anchor_set = self.anchor_set
        if positions is None:  # the benchmark side: no anchor is looked for
            positions, anchors, anchor_set = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint64), _EMPTY
        return _scan_kernel(
            cps,
            self.classes,
            self.lower,
            self.anchor_length,
            _HASH_BASE,
            _HASH_BASE_INVERSE,
            anchor_set.rows,
            anchor_set.bits,
            anchor_set.values,
            self.config.ngram,
            self.gram_power,
            gram_set.rows,
            gram_set.bits,
            gram_set.values,
            all_grams,
            positions,
            anchors,
            grams,
        )

    def match(self, text: str) -> BenchmarkTask | None:
        """The task (smallest label first, so runs are deterministic) the text is contaminated by."""
        cps = _code_point_array(text)
        capacity = 256  # hits are rare; a text with more is scanned again with room for all
        while True:
            positions = np.empty(capacity, dtype=np.int64)
            anchors = np.empty(capacity, dtype=np.uint64)
            grams = np.empty(capacity, dtype=np.uint64)
            found_anchors, found_grams = self._scan(cps, self.gram_set, False, grams, positions, anchors)
            if max(found_anchors, found_grams) <= capacity:
                break
            capacity = max(found_anchors, found_grams)
        hits: set[int] = set()
        if found_anchors and self.by_anchor:
            normal = normalise(text)  # rare: only a text with a candidate window pays for it
            for position, anchor in zip(
                positions[:found_anchors].tolist(), anchors[:found_anchors].tolist(), strict=False
            ):
                for pattern in self.by_anchor.get(anchor, ()):
                    if normal.startswith(pattern, position):
                        hits.update(self.patterns[pattern])
        if found_grams:  # the file's distinct benchmark grams -> how many each task shares
            found = np.unique(grams[:found_grams])
            lo = np.searchsorted(self.task_grams, found, side="left")
            hi = np.searchsorted(self.task_grams, found, side="right")
            owners = np.concatenate([self.gram_owners[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=False)])
            shared = np.bincount(owners, minlength=len(self.tasks))
            flagged = np.flatnonzero((shared > 0) & (shared >= self.config.ngram_overlap * self.ngram_counts))
            hits.update(flagged.tolist())
        if not hits:
            return None
        return min((self.tasks[i] for i in hits), key=lambda t: (t.benchmark, t.task_id))


_MATCHERS: dict[bytes, Decontaminator] = {}
_LAST: tuple = (None, None)  # (config object, matcher): skips pickling the config for every record
_BUILDING = threading.Lock()  # pool threads share one matcher, built once


def _matcher_for(config: DecontamConfig) -> Decontaminator:
    global _LAST
    last_config, last_matcher = _LAST
    if last_config is config:
        return last_matcher
    import pickle

    key = pickle.dumps(config)  # a pool process gets a fresh copy of the config with every batch
    with _BUILDING:
        matcher = _MATCHERS.get(key)
        if matcher is None:
            matcher = _MATCHERS[key] = Decontaminator(config.load_tasks(), config)
    _LAST = (config, matcher)
    return matcher


def warm_matcher(config: DecontamConfig | None) -> None:
    """Build (and cache) the matcher ahead of the first record."""
    if config is not None:
        matcher = _matcher_for(config)
        for text in ("", "\u00e9"):  # the first match loads the compiled kernel: its ASCII and its UTF-32 form
            matcher.match(text)


def decontaminate_record(record, config: DecontamConfig | None) -> list[tuple]:
    """One kept record -> [('clean', record)] or [('contaminated', dropped record)], plus stats
    events. The matcher is built once per process and cached by config; threads share it (its
    scan releases the GIL)."""
    events: list[tuple] = [("event", FileIn())]
    if config is None:
        return events + [("clean", record)]
    matcher = _matcher_for(config)
    task = matcher.match(record.content)
    if task is None:
        return events + [("clean", record)]
    return events + [
        ("event", Contaminated(task.benchmark)),
        ("contaminated", record.drop(drop_reason("contaminated", task.label))),
    ]
