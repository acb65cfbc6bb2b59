"""`codemill run`: the executor of the whole job. The stages are described in stages.py; this
module keys them, runs them in order, marks them finished, resumes them, and links their outputs.

Each stage writes to OUT/stages/<stage>-<key>, where the key hashes the stage's config, its inputs'
keys and codemill's version. A stage is finished when its `_STAGE.json` marker exists; the marker
is written last, so a stage killed half-way is never taken for finished. A rerun reuses finished
stages, redoes an unfinished one from scratch, except training, which resumes from its newest
valid checkpoint (and gives the same losses as an uninterrupted run). OUT/<name> links point at
the current stages' outputs.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from codemill.pipelines.common import write_json
from codemill.pipelines.run_config import RunConfig, stage_key
from codemill.pipelines.stages import STAGES, RunError, StageContext, StageSpec, planned_sources

MARKER = "_STAGE.json"


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


def _key_parts(spec: StageSpec, config: RunConfig, keys: dict[str, str], sources: list) -> list:
    parts: list = [sources] if spec.reads_sources else []
    return parts + [keys[name] for name in spec.inputs] + [getattr(config, section) for section in spec.sections]


def plan(config: RunConfig, out: Path, specs: list) -> dict[str, Stage]:
    """Every stage's directory, keyed by its config sections and its inputs' keys."""
    from codemill.curation.sources.base import spec_to_json

    out = Path(out).resolve()
    sources = [spec_to_json(s) for s in specs]
    keys: dict[str, str] = {}
    for spec in STAGES:
        keys[spec.name] = stage_key(spec.name, *_key_parts(spec, config, keys, sources))
    return {
        spec.name: Stage(spec.name, keys[spec.name], out / "stages" / f"{spec.name}-{keys[spec.name]}", spec.resumable)
        for spec in STAGES
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
    specs = planned_sources(config)
    if not specs:
        raise RunError("nothing to read: the configured sources hold no files (run.sources)")
    for spec in STAGES:
        if spec.preflight is not None:
            spec.preflight(config)
    stages = plan(config, out, specs)
    result = RunResult(out, stages)
    workers = config.run.workers or os.cpu_count() or 1
    beam = list(config.run.beam_args) + list(beam_args or [])
    for number, spec in enumerate(STAGES, 1):
        name, stage = spec.name, stages[spec.name]
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
        try:
            summary = spec.step(StageContext(config, stages, stage, specs, beam, workers))
        except Exception as err:
            err.stage = name  # type: ignore[attr-defined]  # the command line names the stage
            raise
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


def _link_outputs(out: Path, stages: dict[str, Stage]) -> None:
    """OUT/<name> -> the current run's stage outputs (relative links: the folder can move)."""
    for link, stage, inside in ((link, spec.name, inside) for spec in STAGES for link, inside in spec.links):
        target = stages[stage].path / inside if inside else stages[stage].path
        path = out / link
        tmp = out / f".{link}.tmp-link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(target, out))
        os.replace(tmp, path)
