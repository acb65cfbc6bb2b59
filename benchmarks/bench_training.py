"""Training step throughput and memory: codemill's hybrid model against transformers'
FalconH1ForCausalLM with the same config and the same weights, on the same cores.

For each shape, each side runs in its own fresh process (so peak RSS is its own): build the model
(ours from the named config; transformers' by loading our `export_hf` of the same weights), then
time forward + backward + AdamW step on random tokens after warm-up steps (fused AdamW on both sides:
ours through the trainer's Optimizers, transformers' as its Trainer's default `adamw_torch_fused`).
Reported: seconds per step, tokens/s, peak RSS, the step's achieved FLOP/s (codemill's FLOP count, the same for both
sides) as a fraction of this machine's matmul peak in the same precision, measured in the same run.

`--precision fp32,bf16` runs every side in each precision: bf16 is codemill's training precision
(autocast over float32 weights, the scan in float32) and, for transformers, the same
`torch.autocast("cpu", dtype=torch.bfloat16)`. With bf16 in the list, `--curve-steps N` also trains
the tiny model N steps on real token shards with `codemill train` in fp32 and in bf16 and compares
the losses at every logged step. The processor's bf16 features and what `auto` picks are printed.

Usage: python benchmarks/bench_training.py [--shapes tiny,small] [--steps 20] [--threads 2]
                                           [--precision fp32,bf16] [--curve-steps 200]
Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {
    # the DESIGN.md anchor: hidden 128, 4 layers, batch 4 x 256
    "tiny": dict(config="tiny", overrides=dict(vocab_size=1024), batch=4, seq=256),
    # the ~40M "small" config with an 8k vocabulary
    "small": dict(config="small", overrides=dict(vocab_size=8192), batch=4, seq=256),
}


def worker(
    side: str,
    shape: str,
    steps: int,
    warmup: int,
    checkpoint_dir: str,
    compile_model: bool,
    activation_checkpointing: bool = False,
    precision: str = "fp32",
) -> dict:
    import resource
    import time

    import torch

    from codemill.training.precision import resolve_precision

    autocast = resolve_precision(precision, torch.device("cpu")).autocast(torch.device("cpu"))

    from codemill.training.model import HybridLM, flops_per_token, named_config

    spec = SHAPES[shape]
    config = named_config(spec["config"], **spec["overrides"])
    torch.manual_seed(0)
    if side == "codemill":
        model = HybridLM(config)
        model.reset_parameters(seed=0)
        if activation_checkpointing:
            from codemill.training.distributed import apply_activation_checkpointing

            apply_activation_checkpointing(model)
        if compile_model:
            model = torch.compile(model)

        def loss_of(tokens):
            return model.loss(tokens[:, :-1], tokens[:, 1:]) if not compile_model else _compiled_loss(model, tokens)
    else:
        from transformers import FalconH1ForCausalLM

        model = FalconH1ForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32)
        model.train()

        def loss_of(tokens):
            return model(tokens[:, :-1], labels=tokens[:, :-1].clone(), use_cache=False).loss

    if side == "codemill":  # our trainer's optimiser (fused AdamW, parameter groups)
        from codemill.training.optim import OptimConfig, Optimizers

        optimizer = Optimizers(model, OptimConfig(lr=1e-4, grad_clip=0), config.hidden_size)
    else:  # what transformers' Trainer uses by default with torch >= 2.8 (adamw_torch_fused)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(
        0, config.vocab_size, (spec["batch"], spec["seq"] + 1), generator=torch.Generator().manual_seed(1)
    )
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        with autocast:
            loss = loss_of(tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    seconds = times[len(times) // 2]
    tokens_per_step = spec["batch"] * spec["seq"]
    return {
        "side": side,
        "shape": shape,
        "precision": precision,
        "seconds": seconds,
        "tokens_per_s": tokens_per_step / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_step": flops_per_token(config, spec["seq"]) * tokens_per_step,
        "loss": float(loss),
    }


def _compiled_loss(model, tokens):
    from codemill.training.model import masked_cross_entropy

    return masked_cross_entropy(model(tokens[:, :-1]), tokens[:, 1:])


def matmul_peak(dtype) -> float:
    import torch

    from codemill.training.loop import measure_matmul_peak

    return measure_matmul_peak(torch.device("cpu"), seconds=2.0, dtype=dtype)


EVAL_SAMPLES = 64


def loss_curves(steps: int, threads: int) -> dict[str, dict[str, dict[int, float]]]:
    """`codemill train` of the tiny model on real token shards, in fp32 and in bf16: per precision,
    the training loss at each logged step ("train": one batch each, so it moves by the batch) and
    the loss of each checkpoint on one fixed set of samples past the training ones ("eval": the
    same tokens at every checkpoint, computed as the run trained, under its precision)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from token_data import make_token_dataset

    from codemill.training.data import DataConfig
    from codemill.training.loop import TrainConfig
    from codemill.training.optim import OptimConfig

    curves = {}
    every = max(1, steps // 10)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_token_dataset(Path(tmp) / "tokens")
        for precision in ("fp32", "bf16"):
            config = TrainConfig(
                out_dir=f"{tmp}/{precision}",
                model="tiny",
                data=DataConfig(path=str(data), seq_len=128),
                steps=steps,
                micro_batch=8,
                log_every=every,
                checkpoint_every=every,
                keep_checkpoints=steps,
                optim=OptimConfig(warmup_steps=max(1, steps // 20), lr=3e-3),
                peak_flops=1e11,
                precision=precision,
            )
            code = (
                "import json, sys; from codemill.training.loop import TrainConfig, train; "
                "train(TrainConfig.from_dict(json.loads(sys.argv[1])))"
            )
            environment = dict(os.environ, CODEMILL_PROGRESS="0", OMP_NUM_THREADS=str(threads))
            subprocess.run(
                [sys.executable, "-c", code, json.dumps(config.to_dict())],
                check=True,
                capture_output=True,
                env=environment,
            )
            rows = [json.loads(line) for line in Path(f"{tmp}/{precision}/metrics.jsonl").read_text().splitlines()]
            evaluated = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--eval-checkpoints",
                    f"{tmp}/{precision}",
                    json.dumps(config.data.__dict__),
                    str(steps * config.micro_batch),
                ],
                check=True,
                capture_output=True,
                text=True,
                env=environment,
            )
            curves[precision] = {
                "train": {row["step"]: row["loss"] for row in rows},
                "eval": {int(k): v for k, v in json.loads(evaluated.stdout).items()},
            }
    return curves


def eval_checkpoints(run: str, data_json: str, first_sample: int) -> dict[int, float]:
    """Mean loss of each checkpoint of `run` on EVAL_SAMPLES samples starting at first_sample."""
    import torch

    from codemill.training.data import DataConfig, PackedSamples
    from codemill.training.loop import load_model
    from codemill.training.model import masked_cross_entropy

    samples = PackedSamples(DataConfig(**json.loads(data_json)), first_sample + EVAL_SAMPLES)
    inputs, targets, mask = samples.batch(first_sample, EVAL_SAMPLES)
    losses = {}
    for checkpoint in sorted((Path(run) / "checkpoints").glob("step-*")):
        model = load_model(checkpoint)
        with torch.no_grad(), model.precision.autocast(torch.device("cpu")):
            losses[int(checkpoint.name.split("-")[1])] = float(masked_cross_entropy(model(inputs), targets, mask))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also run codemill under torch.compile")
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="also run codemill with activation checkpointing (the trainer's option)",
    )
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16")
    parser.add_argument(
        "--curve-steps",
        type=int,
        default=200,
        help="with bf16: steps of the tiny model's fp32-vs-bf16 loss curves (0: skip)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--eval-checkpoints", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eval_checkpoints:
        run, data_json, first = args.eval_checkpoints
        print(json.dumps(eval_checkpoints(run, data_json, int(first))))
        return
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        side, shape, checkpoint_dir, variant, precision = args.worker.split(",")
        print(
            json.dumps(
                worker(
                    side,
                    shape,
                    args.steps,
                    args.warmup,
                    checkpoint_dir,
                    variant == "compile",
                    variant == "ac",
                    precision,
                )
            )
        )
        return

    import torch

    from codemill.training.precision import cpu_bf16_flags, resolve_precision

    torch.set_num_threads(args.threads)
    precisions = args.precision.split(",")
    peaks = {p: matmul_peak(torch.bfloat16 if p == "bf16" else torch.float32) for p in precisions}
    rows = []
    for shape in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            # The same weights for both: our init, exported to a FalconH1 checkpoint.
            from codemill.training.export_hf import export_hf
            from codemill.training.model import HybridLM, named_config

            spec = SHAPES[shape]
            torch.manual_seed(0)
            model = HybridLM(named_config(spec["config"], **spec["overrides"]))
            model.reset_parameters(seed=0)
            export_hf(model, Path(tmp))
            del model
            sides = (
                [("transformers", "eager"), ("codemill", "eager")]
                + ([("codemill", "compile")] if args.compile else [])
                + ([("codemill", "ac")] if args.activation_checkpointing else [])
            )
            for precision in precisions:
                for side, variant in sides:
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--worker",
                            f"{side},{shape},{tmp},{variant},{precision}",
                            "--steps",
                            str(args.steps),
                            "--warmup",
                            str(args.warmup),
                            "--threads",
                            str(args.threads),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                        env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)),
                    )
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    row["label"] = (
                        side
                        + {"eager": "", "compile": " (torch.compile)", "ac": " (activation checkpointing)"}[variant]
                    )
                    rows.append(row)

    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"\n### Training step benchmark ({platform.machine()}, {args.threads} threads, torch {torch.__version__})\n")
    print(
        f"bf16 features of this CPU: {', '.join(cpu_bf16_flags()) or 'none'}; `precision: auto` picks {auto.name} "
        f"({auto.reason})."
    )
    print(
        "Matmul peak (2048^2, "
        + f"{args.threads} threads): "
        + ", ".join(f"{p} {peaks[p] / 1e9:.0f} GFLOP/s" for p in precisions)
        + f". Median of {args.steps} steps after {args.warmup} warm-up steps; forward + backward + AdamW step "
        "on the same random tokens.\n"
    )
    print(
        "| shape | params | precision | side | s/step | tokens/s | vs transformers | vs codemill fp32 | peak RSS MB "
        "| share of matmul peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        for precision in precisions:
            base = next(
                r for r in rows if r["shape"] == shape and r["side"] == "transformers" and r["precision"] == precision
            )
            ours_fp32 = next(
                (r for r in rows if r["shape"] == shape and r["label"] == "codemill" and r["precision"] == "fp32"), None
            )
            for r in (r for r in rows if r["shape"] == shape and r["precision"] == precision):
                versus = f"{r['tokens_per_s'] / ours_fp32['tokens_per_s']:.2f}x" if ours_fp32 else "-"
                print(
                    f"| {shape} | {r['params'] / 1e6:.2f}M | {precision} | {r['label']} | {r['seconds']:.3f} | "
                    f"{r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {versus} | "
                    f"{r['peak_rss_mb']:,.0f} | {r['flops_per_step'] / r['seconds'] / peaks[precision]:.0%} |"
                )
    if "bf16" in precisions and args.curve_steps:
        curves = loss_curves(args.curve_steps, args.threads)
        print(f"\nLoss curves, tiny model, {args.curve_steps} steps of `codemill train` (step: fp32 / bf16):")
        for kind, what in (
            ("train", "training loss of the step's batch"),
            ("eval", f"checkpoint's loss on {EVAL_SAMPLES} fixed held-out samples"),
        ):
            fp32, bf16 = curves["fp32"][kind], curves["bf16"][kind]
            worst = max(abs(bf16[s] - fp32[s]) / fp32[s] for s in fp32)
            print(
                f"- {what}: "
                + "; ".join(f"{s}: {fp32[s]:.3f} / {bf16[s]:.3f}" for s in sorted(fp32))
                + f"; largest relative difference {worst:.2%}"
            )


if __name__ == "__main__":
    main()
