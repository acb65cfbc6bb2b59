"""`codemill eval-signal RUN_DIR`: every checkpoint of a training run through the likelihood metrics,
then each metric's curve, its signal quality and SNR, and a plot.

Pairs per task: HumanEval and MBPP (prompt, canonical solution), GSM8K (question, reference answer),
and held-out code (no prompt): standard-library modules of the running Python, which the embedded
default corpus (installed distributions) does not contain.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from codemill.eval.likelihood import Pair, likelihood_metrics, logits_fn
from codemill.eval.signal import curve_report, plot_curves

SIGNAL_TASKS = ("humaneval", "mbpp", "gsm8k", "code")


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
        raise ValueError(f"unknown signal task {task!r}; tasks: {', '.join(SIGNAL_TASKS)}")
    return pairs[:limit] if limit else pairs


def run_signal(run_dir: Path, tasks: list[str], data: dict[str, Path], limit: int | None = 40,
               max_tokens: int = 1024) -> dict:
    import torch

    from codemill.tokenize.tokenizer import load_tokenizer
    from codemill.training.checkpoint import checkpoint_dir
    from codemill.training.loop import load_model

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    tokenizer = load_tokenizer(Path(config["train"]["data"]["path"]) / "tokenizer")
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    checkpoints = sorted(p for p in checkpoint_dir(run_dir).glob("step-*") if p.is_dir())
    if len(checkpoints) < 2:
        raise ValueError(f"{run_dir} has {len(checkpoints)} checkpoint(s); a curve needs several "
                         "(train with keep_checkpoints large enough)")
    pairs = {task: task_pairs(task, data.get(task), limit) for task in tasks}
    steps, curves = [], {}
    for path in checkpoints:
        model = load_model(path)
        steps.append(int(path.name.split("-")[1]))
        run = logits_fn(model)
        with torch.no_grad():  # a context, not set_grad_enabled: the caller's autograd state is not ours
            for task, task_pairs_ in pairs.items():
                metrics = likelihood_metrics(run, encode, task_pairs_, max_tokens=max_tokens)
                curves.setdefault(f"{task} loglik", []).append(metrics["loglik"])
                curves.setdefault(f"{task} -bpb", []).append(-metrics["bpb"])
    report = curve_report(steps, curves)
    out = run_dir / "signal"
    out.mkdir(exist_ok=True)
    (out / "signal.json").write_text(json.dumps(report, indent=2))
    plot_curves(report, out / "curves.png")
    return report
