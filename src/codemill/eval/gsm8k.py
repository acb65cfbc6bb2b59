"""GSM8K scoring, two ways:
- chain of thought: the answer is the number after `####` (the dataset's own format), else after
  "The answer is", else the last number in the text; compared numerically with the reference.
- program of thought (PAL, as bigcode-evaluation-harness's pal-gsm8k): the generation defines
  `solution()`; it runs in the sandbox and what it returns is compared with the reference.
Data: a local test.jsonl ({question, answer}) or the `datasets` hub ("gsm8k", "main", test).

Prompts are 8-shot with the standard exemplars: for PAL, the eight worked programs of the PAL
paper in bigcode-evaluation-harness's layout (`Q: ...\n\n# solution in Python:\n\n\n` then
`def solution():` with the question as docstring); for chain of thought, the eight exemplars of
Wei et al. (2022) as `Q: ...\nA: ... The answer is N.` (lm-evaluation-harness's gsm8k-cot).
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
COT_STOPS = ("\n\n", "Q:", "<file_sep>")
PAL_MARKER = "# solution in Python:"
SHOTS = 8

# (question, chain of thought ending in "The answer is N.", Python body of solution()):
# the 8 exemplars of Wei et al. 2022, with the PAL paper's program for each.
EXEMPLARS = (
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
        "left. 23 - 15 is 8. The answer is 8.",
        "money_initial = 23\nbagels = 5\nbagel_cost = 3\nmoney_spent = bagels * bagel_cost\n"
        "money_left = money_initial - money_spent\nresult = money_left\nreturn result",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
        "balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
        "he had 35 - 2 = 33 golf balls. The answer is 33.",
        "golf_balls_initial = 58\ngolf_balls_lost_tuesday = 23\ngolf_balls_lost_wednesday = 2\n"
        "golf_balls_left = golf_balls_initial - golf_balls_lost_tuesday - golf_balls_lost_wednesday\n"
        "result = golf_balls_left\nreturn result",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday to "
        "thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers "
        "were added. 9 + 20 is 29. The answer is 29.",
        "computers_initial = 9\ncomputers_per_day = 5\nnum_days = 4  # 4 days between monday and thursday\n"
        "computers_added = computers_per_day * num_days\ncomputers_total = computers_initial + computers_added\n"
        "result = computers_total\nreturn result",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. "
        "How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
        "The answer is 9.",
        "toys_initial = 5\nmom_toys = 2\ndad_toys = 2\ntotal_received = mom_toys + dad_toys\n"
        "total_toys = toys_initial + total_received\nresult = total_toys\nreturn result",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
        "Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
        "The answer is 8.",
        "jason_lollipops_initial = 20\njason_lollipops_after = 12\n"
        "denny_lollipops = jason_lollipops_initial - jason_lollipops_after\nresult = denny_lollipops\nreturn result",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
        "they had 74 - 35 = 39. The answer is 39.",
        "leah_chocolates = 32\nsister_chocolates = 42\ntotal_chocolates = leah_chocolates + sister_chocolates\n"
        "chocolates_eaten = 35\nchocolates_left = total_chocolates - chocolates_eaten\nresult = chocolates_left\n"
        "return result",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
        "cars_initial = 3\ncars_arrived = 2\ntotal_cars = cars_initial + cars_arrived\nresult = total_cars\n"
        "return result",
    ),
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
        "there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
        "been 21 - 15 = 6. The answer is 6.",
        "trees_initial = 15\ntrees_after = 21\ntrees_added = trees_after - trees_initial\nresult = trees_added\n"
        "return result",
    ),
)


def pal_prompt(question: str) -> str:
    """bigcode-evaluation-harness's pal-gsm8k prompt: 8 worked programs, then the question."""
    shots = "".join(
        f'Q: {q}\n\n{PAL_MARKER}\n\n\ndef solution():\n    """{q}"""\n'
        + "\n".join("    " + line for line in body.split("\n"))
        + "\n\n\n\n\n\n"
        for q, _, body in EXEMPLARS[:SHOTS]
    )
    return f"{shots}Q: {question}\n\n{PAL_MARKER}\n\n\n"


def cot_prompt(question: str) -> str:
    """8-shot chain of thought (Wei et al. 2022, as lm-evaluation-harness's gsm8k-cot)."""
    shots = "".join(f"Q: {q}\nA: {thought}\n\n" for q, thought, _ in EXEMPLARS[:SHOTS])
    return f"{shots}Q: {question}\nA:"


def _after_prompt(text: str, prompt: str) -> str:
    return text[len(prompt) :] if text.startswith(prompt) else text


def cot_completion(problem: "MathProblem", text: str) -> str:
    """The model's own answer: the 8-shot prompt removed when the text repeats it (the harness
    stores prompt + completion), cut at the chain-of-thought stops."""
    text = _after_prompt(text, cot_prompt(problem.question))
    cut = min((i for i in (text.find(s) for s in COT_STOPS) if i > 0), default=len(text))
    return text[:cut]


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
            raise TaskDataError(
                f"GSM8K needs its data: give --data gsm8k=path/to/test.jsonl, or be online for "
                f"the `datasets` hub ({type(err).__name__}: {err})"
            ) from None
    return [
        MathProblem(f"gsm8k/{i}", r["question"], r["answer"], reference_answer(r["answer"])) for i, r in enumerate(rows)
    ]


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
    for problem, samples in zip(problems, generations, strict=False):
        answers = [extract_answer(cot_completion(problem, s)) for s in samples]
        first += bool(answers) and is_correct(answers[0], problem.answer)
        voted = Counter(a for a in answers if a is not None).most_common(1)
        majority += bool(voted) and is_correct(voted[0][0], problem.answer)
        details.append({"task_id": problem.task_id, "answers": answers, "reference": problem.answer})
    n = max(1, len(problems))
    return {
        "accuracy": first / n,
        f"maj@{max((len(g) for g in generations), default=1)}": majority / n,
        "problems": len(problems),
    }, details


def pal_program(generation: str) -> str:
    """The program to run: what follows the last "# solution in Python:" when the text carries the
    prompt (as the harness's post-processing), cut at the stops, then `print(solution())`."""
    if PAL_MARKER in generation:
        generation = generation.rsplit(PAL_MARKER, 1)[1].lstrip("\n")
    cut = min((i for i in (generation.find(s) for s in PAL_STOPS) if i != -1), default=len(generation))
    return generation[:cut] + "\n\nprint(solution())\n"


def pal_answer(stdout: str) -> float | None:
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    return _number(lines[-1].strip()) if lines else None
