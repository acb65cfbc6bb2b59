"""Score generations by executing them in the sandbox: per-sample verdicts and pass@k."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codemill.errors import UserError
from codemill.eval.code_tasks import CodeProblem, full_text, program
from codemill.eval.passk import mean_pass_at_k
from codemill.eval.sandbox import Sandbox, isolation


class GenerationsError(UserError):
    """A generations file that does not fit the task (names the file and the problem)."""


@dataclass
class SampleResult:
    task_id: str
    sample: int
    status: str  # passed | failed | timeout | error
    reason: str


def load_generations(path: Path, problems: Sequence, limited: bool = False) -> list[list[str]]:
    """bigcode-evaluation-harness's generations.json: a list, per problem in task order, of lists
    of generated texts. With `limited` (the task cut to its first problems, as the harness's
    --limit), a file for more problems gives its first ones, as the harness reads it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GenerationsError(f"cannot read generations from {path}: {err}") from None
    if not isinstance(data, list) or not all(isinstance(g, list) and all(isinstance(t, str) for t in g) for g in data):
        raise GenerationsError(f"{path}: expected a JSON list (one per problem) of lists of strings")
    if limited and len(data) > len(problems):
        data = data[: len(problems)]
    if len(data) != len(problems):
        raise GenerationsError(
            f"{path} has generations for {len(data)} problems; the task has {len(problems)} "
            "(the harness writes one list per problem, in task order)"
        )
    return data


def summarise(results: Sequence[SampleResult], samples: Sequence[int], ks: Sequence[int]) -> dict:
    """pass@k over problems (results in problem order, samples[i] of them for problem i), the
    first sample's accuracy, and the count of each verdict."""
    correct: list[int] = []
    firsts: list[bool] = []
    at = 0
    for n in samples:
        own = results[at : at + n]
        correct.append(sum(r.status == "passed" for r in own))
        firsts.append(bool(own) and own[0].status == "passed")
        at += n
    metrics: dict[str, Any] = dict(mean_pass_at_k(samples, correct, ks))
    metrics["accuracy"] = sum(firsts) / max(1, len(firsts))
    metrics["problems"] = len(samples)
    metrics["samples"] = sum(samples)
    metrics["statuses"] = {s: sum(r.status == s for r in results) for s in ("passed", "failed", "timeout", "error")}
    return metrics


def score(
    problems: Sequence[CodeProblem],
    generations: Sequence[Sequence[str]],
    sandbox: Sandbox,
    ks: Sequence[int] = (1, 10),
    progress: bool = False,
) -> tuple[dict, list[SampleResult], list[list[str]]]:
    """(metrics, per-sample results, the post-processed texts as the harness stores them)."""
    jobs = [(p, i, g) for p, gens in zip(problems, generations, strict=False) for i, g in enumerate(gens)]
    outcomes = sandbox.run_many([program(p, g) for p, _, g in jobs], progress=progress)
    results = [SampleResult(p.task_id, i, o.status, o.reason) for (p, i, _), o in zip(jobs, outcomes, strict=False)]
    metrics = summarise(results, [len(g) for g in generations], ks)
    texts = [[full_text(p, g) for g in gens] for p, gens in zip(problems, generations, strict=False)]
    return metrics, results, texts


TASK_NAMES = ("humaneval", "mbpp", "gsm8k", "gsm8k-pal")


def task_prompts(task: str, data: Path | None, limit: int | None = None) -> tuple[list[str], tuple[str, ...]]:
    """(the prompts a model completes, in task order; the stop sequences) for one task."""
    from codemill.eval import gsm8k
    from codemill.eval.code_tasks import TASKS

    if task in TASKS:
        problems = TASKS[task](data)[: limit or None]
        return [p.prompt for p in problems], tuple(problems[0].stops) if problems else ()
    if task == "gsm8k":
        return [gsm8k.cot_prompt(p.question) for p in gsm8k.load_gsm8k(data)[: limit or None]], gsm8k.COT_STOPS
    if task == "gsm8k-pal":
        return [gsm8k.pal_prompt(p.question) for p in gsm8k.load_gsm8k(data)[: limit or None]], gsm8k.PAL_STOPS
    raise UserError(f"unknown task {task!r}; tasks: {', '.join(TASK_NAMES)}")


def evaluate_task(
    task: str,
    data: Path | None,
    generations_file: Path,
    sandbox: Sandbox,
    ks: Sequence[int],
    progress: bool = False,
    limit: int | None = None,
) -> tuple[dict, list, list[list[str]]]:
    """Score one task's generations file: (metrics, per-sample rows, texts to store); with
    `limit`, the task is its first `limit` problems (as the harness's --limit)."""
    from codemill.eval import gsm8k
    from codemill.eval.code_tasks import TASKS

    if task in TASKS:
        problems = TASKS[task](data)[: limit or None]
        return score(problems, load_generations(generations_file, problems, bool(limit)), sandbox, ks, progress)
    if task not in ("gsm8k", "gsm8k-pal"):
        raise UserError(f"unknown task {task!r}; tasks: {', '.join(TASK_NAMES)}")
    math_problems = gsm8k.load_gsm8k(data)[: limit or None]
    generations = load_generations(generations_file, math_problems, bool(limit))
    if task == "gsm8k":
        metrics, details = gsm8k.score_cot(math_problems, generations)
        return metrics, details, [list(g) for g in generations]
    jobs = [(p, i, g) for p, gens in zip(math_problems, generations, strict=False) for i, g in enumerate(gens)]
    outcomes = sandbox.run_many([gsm8k.pal_program(g) for _, _, g in jobs], progress=progress)
    rows = []
    for (p, i, _), o in zip(jobs, outcomes, strict=False):
        answer = gsm8k.pal_answer(o.stdout) if o.status == "passed" else None
        ok = gsm8k.is_correct(answer, p.answer)
        rows.append(
            SampleResult(
                p.task_id,
                i,
                "passed" if ok else ("failed" if o.status == "passed" else o.status),
                o.reason or f"returned {answer}, expected {p.answer}",
            )
        )
    metrics = summarise(rows, [len(g) for g in generations], ks)
    return metrics, rows, [[gsm8k.pal_program(g) for g in gens] for gens in generations]


def write_report(
    out_dir: Path, task: str, metrics: dict, results: list, texts: list[list[str]], settings: dict
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "generations.json").write_text(json.dumps(texts))
    with open(out_dir / "results.jsonl", "w") as f:
        for r in results:
            f.write(json.dumps(asdict(r) if isinstance(r, SampleResult) else r) + "\n")
    (out_dir / "metrics.json").write_text(
        json.dumps({task: metrics, "config": settings, "isolation": isolation()}, indent=2)
    )
