"""Training step throughput and memory: codemill's hybrid model against transformers'
FalconH1ForCausalLM with the same config and the same weights, on the same cores.

For each shape, each side runs in its own fresh process (so peak RSS is its own): build the model
(ours from the named config; transformers' by loading our `export_hf` of the same weights), then
time forward + backward + AdamW step on random tokens after warm-up steps (fused AdamW on both sides:
ours through the trainer's Optimizers, transformers' as its Trainer's default `adamw_torch_fused`). Reported: seconds per
step, tokens/s, peak RSS, the step's achieved FLOP/s (codemill's FLOP count, the same for both
sides) as a fraction of this machine's fp32 matmul peak, measured in the same run.

Usage: python benchmarks/bench_training.py [--shapes tiny,small] [--steps 20] [--threads 2]
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


def worker(side: str, shape: str, steps: int, warmup: int, checkpoint_dir: str, compile_model: bool,
           activation_checkpointing: bool = False) -> dict:
    import resource
    import time

    import torch

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
    tokens = torch.randint(0, config.vocab_size, (spec["batch"], spec["seq"] + 1),
                           generator=torch.Generator().manual_seed(1))
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = loss_of(tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    seconds = times[len(times) // 2]
    tokens_per_step = spec["batch"] * spec["seq"]
    return {"side": side, "shape": shape, "seconds": seconds, "tokens_per_s": tokens_per_step / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": sum(p.numel() for p in model.parameters()),
            "flops_per_step": flops_per_token(config, spec["seq"]) * tokens_per_step, "loss": float(loss)}


def _compiled_loss(model, tokens):
    from codemill.training.model import masked_cross_entropy

    return masked_cross_entropy(model(tokens[:, :-1]), tokens[:, 1:])


def matmul_peak() -> float:
    import torch

    from codemill.training.loop import measure_matmul_peak

    return measure_matmul_peak(torch.device("cpu"), seconds=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also run codemill under torch.compile")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="also run codemill with activation checkpointing (the trainer's option)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        side, shape, checkpoint_dir, variant = args.worker.split(",")
        print(json.dumps(worker(side, shape, args.steps, args.warmup, checkpoint_dir, variant == "compile",
                                variant == "ac")))
        return

    import torch

    torch.set_num_threads(args.threads)
    peak = matmul_peak()
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
            sides = ([("transformers", "eager"), ("codemill", "eager")] + ([("codemill", "compile")] if args.compile
                     else []) + ([("codemill", "ac")] if args.activation_checkpointing else []))
            for side, variant in sides:
                out = subprocess.run([sys.executable, __file__, "--worker", f"{side},{shape},{tmp},{variant}",
                                      "--steps", str(args.steps), "--warmup", str(args.warmup),
                                      "--threads", str(args.threads)],
                                     check=True, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["label"] = side + {"eager": "", "compile": " (torch.compile)",
                                       "ac": " (activation checkpointing)"}[variant]
                rows.append(row)

    print(f"\n### Training step benchmark ({platform.machine()}, {args.threads} threads, torch {torch.__version__})\n")
    print(f"fp32 matmul peak (2048^2, {args.threads} threads): {peak / 1e9:.0f} GFLOP/s. Median of {args.steps} steps "
          f"after {args.warmup} warm-up steps; forward + backward + AdamW step on the same random tokens.\n")
    print("| shape | params | side | s/step | tokens/s | vs transformers | peak RSS MB | vs transformers | "
          "share of matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        base = next(r for r in rows if r["shape"] == shape and r["side"] == "transformers")
        for r in (r for r in rows if r["shape"] == shape):
            print(f"| {shape} | {r['params'] / 1e6:.2f}M | {r['label']} | {r['seconds']:.3f} | {r['tokens_per_s']:,.0f} | "
                  f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {r['peak_rss_mb']:,.0f} | "
                  f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x | {r['flops_per_step'] / r['seconds'] / peak:.0%} |")


if __name__ == "__main__":
    main()
