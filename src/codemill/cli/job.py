"""`codemill run` (the whole job) and `codemill config show`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _load_run_config(path: str | None):
    from codemill.pipelines.run_config import RunConfig

    return RunConfig() if path is None else RunConfig.from_yaml(Path(path))


def _config_show(args: argparse.Namespace) -> int:

    config = _load_run_config(args.config)
    print(f"# effective run config{' from ' + args.config if args.config else ' (defaults)'}")
    print(config.to_yaml(), end="")
    return 0


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from codemill.pipelines.run import run_job

    config = _load_run_config(args.config)
    stage = {"name": "planning"}

    def say(line: str) -> None:
        stage["name"] = line.split("] ", 1)[-1].split(":", 1)[0].split(" ", 1)[0]
        print(line, file=sys.stderr, flush=True)

    try:
        result = run_job(config, Path(args.out), beam_args, fresh=args.fresh, say=say)
    except KeyboardInterrupt:
        print(
            f"\ncodemill run: interrupted during stage {stage['name']}; nothing of it is marked finished. "
            "Rerun the same command to resume (finished stages are reused, training continues from its last "
            "checkpoint).",
            file=sys.stderr,
        )
        return 130
    out = result.out
    print(
        f"\ncodemill run finished in {sum(result.seconds.values()):.0f} s "
        f"({', '.join(result.reused) + ' reused' if result.reused else 'every stage ran'})"
    )
    summaries = result.summaries
    curate, tokenize = summaries.get("curate", {}), summaries.get("tokenize", {})
    train, published = summaries.get("train", {}), summaries.get("publish", {})
    print(f"  corpus    {curate.get('kept_files', 0):,} of {curate.get('files', 0):,} files kept -> {out / 'curated'}")
    print(
        f"  dataset   {published.get('rows', 0):,} rows, {published.get('shards', 0)} Parquet shard(s) + manifest "
        f"-> {out / 'dataset'}"
    )
    print(
        f"  tokens    {tokenize.get('tokens', 0):,} in {tokenize.get('documents', 0):,} documents -> {out / 'tokens'}"
    )
    if train.get("first_loss") is not None:
        print(
            f"  training  {train.get('steps')} steps, loss {train['first_loss']:.3f} -> {train['last_loss']:.3f} "
            f"-> {out / 'train'}"
        )
    print(f"  model     Hugging Face FalconH1 export -> {out / 'model'}")
    evaluation = summaries.get("eval", {})
    passes = ", ".join(
        f"{task} {name} {value:.3f}"
        for task, metrics in evaluation.items()
        if task != "signal"
        for name, value in metrics.items()
        if name.startswith("pass@")
    )
    print(
        f"  eval      {len(evaluation.get('signal', {}))} curves (SQ, SNR){'; ' + passes if passes else ''} "
        f"-> {out / 'eval'}"
    )
    print(f"  report    {out / 'report.html'}")
    return 0


def register_run(commands) -> None:
    from codemill.pipelines.stages import STAGES

    # The stages and the command that runs each alone, from the one description of the stages.
    order = " -> ".join(
        f"{spec.name} ({'codemill ' + spec.command if spec.command else 'run only'})" for spec in STAGES
    )
    run = commands.add_parser(
        "run",
        help="the whole job: curate, dedup, tokenize, train, evaluate, publish, report",
        description="Curate (the embedded default corpus unless run.sources says otherwise), deduplicate, "
        "decontaminate, train a tokenizer, write the mixture shards, train the small hybrid model "
        "with periodic checkpoints, evaluate every checkpoint (likelihood curves, SQ, SNR) and the "
        "last one (sandboxed pass@k), publish the dataset folder and write report.html. Stages are "
        "resumable: rerun the same command after an interruption.",
        epilog=f"Stages, in order: {order}. Any Apache Beam pipeline option passes through to the curation "
        "and tokenize pipelines.",
    )
    run.add_argument(
        "--config",
        help="run config YAML (sections: run, curate, dedup, tokenizer, tokenize, train, "
        "eval, publish); `codemill config show` prints every default",
    )
    run.add_argument("--out", default="out", help="output directory (default: %(default)s)")
    run.add_argument("--fresh", action="store_true", help="redo every stage, even finished ones")
    run.set_defaults(handler=_run, beam_args=True)


def register_config(commands) -> None:
    config_cmd = commands.add_parser("config", help="run config tools")
    config_commands = config_cmd.add_subparsers(dest="config_command", metavar="ACTION")
    show = config_commands.add_parser("show", help="print the effective run config, defaults included")
    show.add_argument("--config", help="run config YAML (default: only defaults)")
    show.set_defaults(handler=_config_show, beam_args=False)
