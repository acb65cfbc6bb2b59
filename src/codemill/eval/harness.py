"""pass@k over tasks, the one path that `codemill eval` and the run's eval stage share: sample
completions for each task's prompts (or take a harness generations file), score them in the
sandbox, and write each task's report and one results file across the tasks, as lm-eval does."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from codemill.errors import UserError
from codemill.eval.sandbox import Sandbox, SandboxConfig, isolation
from codemill.eval.score import TASK_NAMES, evaluate_task, task_prompts, write_report

RESULTS = "results.json"  # every task's metrics in one file


@dataclass(frozen=True)
class HarnessSettings:
    """What a pass@k evaluation is scored with (and recorded in each report)."""

    k: tuple[int, ...] = (1, 10)
    limit: int | None = None  # the first `limit` problems of each task; None: all
    timeout: float = 10.0  # seconds a program may run in the sandbox
    workers: int = 1  # sandbox slots
    data: dict[str, Path] = field(default_factory=dict)  # task (or its family: gsm8k) -> data file

    def data_for(self, task: str) -> Path | None:
        return self.data.get(task) or self.data.get(task.split("-")[0])


def check_tasks(tasks: list[str]) -> None:
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown or not tasks:
        raise UserError(f"unknown task(s) {unknown or tasks}; available: {', '.join(TASK_NAMES)}")


def generate_for_tasks(model: Path, tasks: list[str], sampling, settings: HarnessSettings, out: Path) -> list[Path]:
    """Sample completions of each task's prompts with the model (a run or checkpoint of ours, or a
    transformers folder); writes the harness's generations file (prompt + completion) per task
    under out/<task> and returns their paths."""
    from codemill.eval.generate import load_generator

    generate, description = load_generator(model)
    files = []
    for task in tasks:
        prompts, stops = task_prompts(task, settings.data_for(task), settings.limit)
        completions = generate(prompts, stops, sampling, progress=True)
        path = out / task / "generations_raw.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([[p + c for c in cs] for p, cs in zip(prompts, completions, strict=True)]))
        print(f"{task}: {sum(len(c) for c in completions)} completions from {description}", file=sys.stderr)
        files.append(path)
    return files


def score_tasks(
    tasks: list[str], generation_files: list[Path], settings: HarnessSettings, out: Path, recorded: dict
) -> dict[str, dict]:
    """Score each task's generations in one sandbox; writes out/<task>/{metrics.json,
    results.jsonl, generations.json} and out/results.json. Returns the metrics by task."""
    if len(generation_files) != len(tasks):
        raise UserError(
            f"give one generations file per task ({len(tasks)} tasks, {len(generation_files)} files), "
            "in the order of the tasks"
        )
    ks = list(settings.k)
    config = {"k": ks, "timeout": settings.timeout, "workers": settings.workers, "limit": settings.limit, **recorded}
    results: dict[str, dict] = {}
    with Sandbox(SandboxConfig(timeout=settings.timeout, workers=settings.workers)) as sandbox:
        for task, generations in zip(tasks, generation_files, strict=True):
            metrics, rows, texts = evaluate_task(
                task, settings.data_for(task), Path(generations), sandbox, ks, progress=True, limit=settings.limit
            )
            write_report(out / task, task, metrics, rows, texts, {**config, "generations": str(generations)})
            results[task] = metrics
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_text(json.dumps({"results": results, "config": config, "isolation": isolation()}, indent=2))
    return results
