"""`codemill eval-signal RUN_DIR`: every checkpoint of a training run through the likelihood metrics
(and, beside them, greedy pass@1 on a code task, the metric they are meant to foretell), then each
metric's curve, its signal quality and SNR, and a plot.

Pairs per task: HumanEval and MBPP (prompt, canonical solution), GSM8K (question, reference answer),
and held-out code (no prompt): standard-library modules of the running Python, which the embedded
default corpus (installed distributions) does not contain.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from codemill.errors import MissingInputError, UserError
from codemill.eval.likelihood import Pair, likelihood_metrics, logits_fn
from codemill.eval.names import SIGNAL_TASKS
from codemill.eval.signal import curve_report, plot_curves
from codemill.progress import bar


def task_pairs(task: str, data: Path | None, limit: int | None) -> list[Pair]:
    if task in ("humaneval", "mbpp"):
        from codemill.eval.code_tasks import TASKS

        pairs = [Pair(p.prompt, p.canonical) for p in TASKS[task](data)]
    elif task == "gsm8k":
        from codemill.eval.gsm8k import load_gsm8k

        pairs = [Pair(f"Question: {p.question}\nAnswer: ", p.answer_text) for p in load_gsm8k(data)]
    elif task == "code":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in stdlib.glob("*.py") if 2_000 <= p.stat().st_size <= 20_000)
        pairs = [Pair("", p.read_text(errors="replace")) for p in files]
    else:
        raise UserError(f"unknown signal task {task!r}; tasks: {', '.join(SIGNAL_TASKS)}")
    return pairs[:limit] if limit else pairs


def run_signal(
    run_dir: Path,
    tasks: list[str],
    data: dict[str, Path],
    limit: int | None = 40,
    max_tokens: int = 1024,
    pass_tasks: tuple[str, ...] = (),
    pass_limit: int = 20,
    max_new_tokens: int = 128,
    progress: bool = False,
    out_dir: Path | None = None,
) -> dict:
    """Curves over every checkpoint of `run_dir`: likelihood metrics of `tasks`, and greedy pass@1
    on the first `pass_limit` problems of each of `pass_tasks` (sandboxed). Writes signal.json and
    curves.png to `out_dir` (default RUN_DIR/signal)."""
    import torch

    from codemill.eval.code_tasks import TASKS
    from codemill.eval.generate import SamplingConfig, codec_for, generate_ours
    from codemill.eval.sandbox import Sandbox
    from codemill.eval.score import score
    from codemill.tokenize.tokenizer import load_tokenizer
    from codemill.training.checkpoint import checkpoint_dir
    from codemill.training.loop import load_model

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise MissingInputError(f"{run_dir} is not a `codemill train` run directory (no config.json)")
    config = json.loads((run_dir / "config.json").read_text())
    tokenizer = load_tokenizer(Path(config["train"]["data"]["path"]) / "tokenizer")
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    checkpoints = sorted(p for p in checkpoint_dir(run_dir).glob("step-*") if p.is_dir())
    if len(checkpoints) < 2:
        raise UserError(
            f"{run_dir} has {len(checkpoints)} checkpoint(s); a curve needs several "
            "(train with keep_checkpoints large enough)"
        )
    unknown = [t for t in pass_tasks if t not in TASKS]
    if unknown:
        raise UserError(f"pass@1 curves are for code tasks ({', '.join(TASKS)}), not {unknown}")
    pairs = {task: task_pairs(task, data.get(task), limit) for task in tasks}
    problems = {task: TASKS[task](data.get(task))[:pass_limit] for task in pass_tasks}
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    sandbox = Sandbox() if pass_tasks else None
    steps: list[int] = []
    curves: dict[str, list[float]] = {}
    iterator = bar(checkpoints, desc="checkpoints", unit="checkpoint", disable=not progress)
    try:
        for path in iterator:
            model = load_model(path)
            steps.append(int(path.name.split("-")[1]))
            run = logits_fn(model)
            with torch.no_grad():  # a context, not set_grad_enabled: the caller's autograd state is not ours
                for task, task_pairs_ in pairs.items():
                    metrics = likelihood_metrics(run, encode, task_pairs_, max_tokens=max_tokens)
                    curves.setdefault(f"{task} loglik", []).append(metrics["loglik"])
                    curves.setdefault(f"{task} -bpb", []).append(-metrics["bpb"])
            for task, task_problems in problems.items():
                completions = generate_ours(
                    model, codec_for(tokenizer), [p.prompt for p in task_problems], task_problems[0].stops, greedy
                )
                assert sandbox is not None  # made when there are pass@1 tasks
                passed, _, _ = score(task_problems, completions, sandbox, ks=(1,))
                curves.setdefault(f"{task} pass@1", []).append(passed["pass@1"])
    finally:
        if sandbox is not None:
            sandbox.close()
    report = curve_report(steps, curves)
    out = Path(out_dir) if out_dir is not None else run_dir / "signal"
    out.mkdir(parents=True, exist_ok=True)
    (out / "signal.json").write_text(json.dumps(report, indent=2))
    plot_curves(report, out / "curves.png")
    return report
