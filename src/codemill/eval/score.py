"""Score generations by executing them in the sandbox: per-sample verdicts and pass@k."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from codemill.eval.code_tasks import CodeProblem, full_text, program
from codemill.eval.passk import mean_pass_at_k
from codemill.eval.sandbox import Sandbox, isolation


class GenerationsError(ValueError):
    """A generations file that does not fit the task (names the file and the problem)."""


@dataclass
class SampleResult:
    task_id: str
    sample: int
    status: str  # passed | failed | timeout | error
    reason: str


def load_generations(path: Path, problems: Sequence[CodeProblem]) -> list[list[str]]:
    """bigcode-evaluation-harness's generations.json: a list, per problem in task order, of lists
    of generated texts."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GenerationsError(f"cannot read generations from {path}: {err}") from None
    if not isinstance(data, list) or not all(isinstance(g, list) and all(isinstance(t, str) for t in g) for g in data):
        raise GenerationsError(f"{path}: expected a JSON list (one per problem) of lists of strings")
    if len(data) != len(problems):
        raise GenerationsError(f"{path} has generations for {len(data)} problems; the task has {len(problems)} "
                               "(the harness writes one list per problem, in task order)")
    return data


def score(problems: Sequence[CodeProblem], generations: Sequence[Sequence[str]], sandbox: Sandbox,
          ks: Sequence[int] = (1, 10), progress: bool = False) -> tuple[dict, list[SampleResult], list[list[str]]]:
    """(metrics, per-sample results, the post-processed texts as the harness stores them)."""
    jobs = [(p, i, g) for p, gens in zip(problems, generations) for i, g in enumerate(gens)]
    outcomes = sandbox.run_many([program(p, g) for p, _, g in jobs], progress=progress)
    results = [SampleResult(p.task_id, i, o.status, o.reason) for (p, i, _), o in zip(jobs, outcomes)]
    samples = [len(g) for g in generations]
    correct = []
    at = 0
    for n in samples:
        correct.append(sum(r.status == "passed" for r in results[at: at + n]))
        at += n
    metrics = mean_pass_at_k(samples, correct, ks)
    metrics["problems"] = len(problems)
    metrics["samples"] = sum(samples)
    metrics["statuses"] = {s: sum(r.status == s for r in results) for s in ("passed", "failed", "timeout", "error")}
    texts = [[full_text(p, g) for g in gens] for p, gens in zip(problems, generations)]
    return metrics, results, texts


def write_report(out_dir: Path, task: str, metrics: dict, results: list[SampleResult], texts: list[list[str]],
                 settings: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "generations.json").write_text(json.dumps(texts))
    with open(out_dir / "results.jsonl", "w") as f:
        for r in results:
            f.write(json.dumps(asdict(r)) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps({task: metrics, "config": settings, "isolation": isolation()},
                                                     indent=2))
