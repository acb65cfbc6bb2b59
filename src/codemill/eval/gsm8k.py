"""GSM8K scoring, two ways:
- chain of thought: the answer is the number after `####` (the dataset's own format), else after
  "The answer is", else the last number in the text; compared numerically with the reference.
- program of thought (PAL, as bigcode-evaluation-harness's pal-gsm8k): the generation defines
  `solution()`; it runs in the sandbox and what it returns is compared with the reference.
Data: a local test.jsonl ({question, answer}) or the `datasets` hub ("gsm8k", "main", test).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codemill.eval.code_tasks import TaskDataError
from codemill.jsonl import read_jsonl

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
PAL_STOPS = ("\n\n\n", "\nQ:", "\nQuestion:", "\n```", "<file_sep>")


@dataclass(frozen=True)
class MathProblem:
    task_id: str
    question: str
    answer_text: str
    answer: float


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def reference_answer(answer_text: str) -> float:
    if "####" not in answer_text:
        raise TaskDataError(f"GSM8K answer without '####': {answer_text[-80:]!r}")
    value = _number(answer_text.split("####")[-1].strip())
    if value is None:
        raise TaskDataError(f"GSM8K answer is not a number: {answer_text.split('####')[-1]!r}")
    return value


def load_gsm8k(path: Path | None = None) -> list[MathProblem]:
    if path is not None:
        rows = list(read_jsonl(Path(path), TaskDataError, "GSM8K data"))
    else:
        try:
            from datasets import load_dataset

            rows = list(load_dataset("gsm8k", "main", split="test"))
        except Exception as err:  # noqa: BLE001  offline or no datasets: one clear message
            raise TaskDataError(f"GSM8K needs its data: give --data gsm8k=path/to/test.jsonl, or be online for "
                                f"the `datasets` hub ({type(err).__name__}: {err})") from None
    return [MathProblem(f"gsm8k/{i}", r["question"], r["answer"], reference_answer(r["answer"]))
            for i, r in enumerate(rows)]


def extract_answer(text: str) -> float | None:
    """The final answer of a chain-of-thought completion (None when it states none)."""
    if "####" in text:
        found = _NUMBER.search(text.split("####", 1)[1])
        return _number(found.group()) if found else None
    marker = re.search(r"[Tt]he (?:final )?answer is[:\s]*\$?\s*(" + _NUMBER.pattern + ")", text)
    if marker:
        return _number(marker.group(1))
    numbers = _NUMBER.findall(text)
    return _number(numbers[-1]) if numbers else None


def is_correct(predicted: float | None, reference: float) -> bool:
    return predicted is not None and abs(predicted - reference) <= 1e-4 * max(1.0, abs(reference))


def score_cot(problems: Sequence[MathProblem], generations: Sequence[Sequence[str]]) -> tuple[dict, list[dict]]:
    """Accuracy of the first sample, and of the majority answer over all samples (maj@n)."""
    first, majority, details = 0, 0, []
    for problem, samples in zip(problems, generations):
        answers = [extract_answer(s) for s in samples]
        first += bool(answers) and is_correct(answers[0], problem.answer)
        voted = Counter(a for a in answers if a is not None).most_common(1)
        majority += bool(voted) and is_correct(voted[0][0], problem.answer)
        details.append({"task_id": problem.task_id, "answers": answers, "reference": problem.answer})
    n = max(1, len(problems))
    return {"accuracy": first / n, f"maj@{max((len(g) for g in generations), default=1)}": majority / n,
            "problems": len(problems)}, details


def pal_program(generation: str) -> str:
    cut = min((i for i in (generation.find(s) for s in PAL_STOPS) if i != -1), default=len(generation))
    return generation[:cut] + "\n\nprint(solution())\n"


def pal_answer(stdout: str) -> float | None:
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    return _number(lines[-1].strip()) if lines else None
