"""The checks a GPU machine is for, as one prepared call (at most ~8 minutes on one H100).

Run from the repository root on the GPU machine, with nothing installed beyond what it has (torch,
and whatever CUDA packages are importable; codemill's own sources are put on sys.path here):

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json

Each stage prints one line per check, `CHECK <name> PASS|FAIL|SKIP metric=... tol=...`, and the
JSON holds the versions, the path each kernel takes and every check. Stages:

  versions   torch / CUDA / Triton / transformers versions, the device, and each kernel's path
  ssd        the chunked reference (fp32, and under bf16 autocast) and mamba-ssm's Triton scan when
             it imports, against a float64 sequential reference, forward and backward
  attention  grouped-query attention in bf16 (SDPA, or flash-attn when it imports) against float64
  conv       causal-conv1d's kernel against the reference, when it imports
  parity     the same weights, CPU fp32 against the device in bf16: loss, logits and gradients, on the
             tiny and the Falcon-H1-0.5B shapes
  training   training steps with tokens/s and MFU against the measured bf16 matmul peak (the 0.5B
             shape at sequence 2048 on CUDA; the tiny shape on CPU)
  parallel   FSDP2 (bf16 mixed precision) and DDP on one device, a one-process group each

`--cpu` runs every stage that can run without a GPU, on small shapes: CI runs it that way
(`tests/test_gpu_check.py`) so the script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

RESULTS: dict = {"checks": [], "versions": {}, "kernels": {}}


def check(name: str, metric: float | None, tol: float | None, ok: bool | None, detail: str = "") -> None:
    """Record and print one check; ok=None is a skip."""
    status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    shown = "nan" if metric is None else f"{metric:.3g}"
    print(
        f"CHECK {name} {status} metric={shown} tol={tol if tol is not None else '-'}{' ' + detail if detail else ''}",
        flush=True,
    )
    RESULTS["checks"].append({"name": name, "status": status, "metric": metric, "tol": tol, "detail": detail})


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).norm() / want.norm().clamp(min=1e-12))


# --------------------------------------------------------------------------------------- stages
def stage_versions(device: torch.device) -> None:
    import importlib

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
    }
    for package in ("triton", "transformers", "mamba_ssm", "causal_conv1d", "flash_attn"):
        try:
            versions[package] = getattr(importlib.import_module(package), "__version__", "importable")
        except Exception as err:  # noqa: BLE001 (any failure means: not usable here)
            versions[package] = f"unavailable ({type(err).__name__})"
    RESULTS["versions"] = versions
    from codemill.training.precision import cpu_bf16_flags, resolve_precision

    RESULTS["precision_auto"] = vars(resolve_precision("auto", device))
    RESULTS["cpu_bf16_flags"] = list(cpu_bf16_flags())
    ssd = importlib.import_module("codemill.training.kernels.ssd")
    conv = importlib.import_module("codemill.training.kernels.conv")
    attention = importlib.import_module("codemill.training.kernels.attention")
    on_cuda = device.type == "cuda"
    RESULTS["kernels"] = {
        "ssd": "mamba-ssm Triton" if on_cuda and ssd._cuda_kernel() else "reference",
        "conv": "causal-conv1d" if on_cuda and conv._cuda_kernel() else "reference",
        "attention": "flash-attn" if on_cuda and attention._flash() else "torch SDPA",
    }
    print(json.dumps({"versions": versions, "kernels": RESULTS["kernels"]}), flush=True)
    check("versions", None, None, True)


def _scan_inputs(
    device: torch.device, length: int, heads: int = 8, head_dim: int = 32, groups: int = 2, state: int = 32
):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, length, heads, head_dim, generator=g, dtype=torch.float64)
    dt = torch.rand(2, length, heads, generator=g, dtype=torch.float64) * 0.1 + 0.001
    A = -torch.rand(heads, generator=g, dtype=torch.float64) * 4 - 0.1
    B = torch.randn(2, length, groups, state, generator=g, dtype=torch.float64)
    C = torch.randn(2, length, groups, state, generator=g, dtype=torch.float64)
    D = torch.ones(heads, dtype=torch.float64)
    return [t.to(device) for t in (x, dt, A, B, C, D)]


def stage_ssd(device: torch.device, small: bool) -> None:
    from codemill.training.kernels import ssd_chunked_ref, ssd_sequential_ref
    from codemill.training.kernels.ssd import _cuda_kernel

    length, chunk = (64, 16) if small else (512, 64)
    inputs = _scan_inputs(device, length)
    reference_inputs = [t.detach().clone().requires_grad_(t.dim() > 1) for t in inputs]
    want_y, want_state = ssd_sequential_ref(*reference_inputs[:5], reference_inputs[5])
    want_y.square().sum().backward()
    want_grad = reference_inputs[0].grad

    def run(name: str, fn, dtype: torch.dtype, autocast: bool, tol: float) -> None:
        leaves = [t.detach().to(dtype if t.dim() > 1 else torch.float32).requires_grad_(t.dim() > 1) for t in inputs]
        context = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if autocast
            else torch.autocast(device.type, enabled=False)
        )
        with context:
            y, final = fn(leaves[0], leaves[1].float(), leaves[2].float(), leaves[3], leaves[4], chunk, leaves[5])
        y.float().square().sum().backward()
        forward, backward = rel_error(y, want_y), rel_error(leaves[0].grad, want_grad)
        check(f"ssd.{name}.forward", forward, tol, forward <= tol)
        check(f"ssd.{name}.backward", backward, tol, backward <= tol)
        check(f"ssd.{name}.state_dtype", None, None, final.dtype == torch.float32, str(final.dtype))
        check(f"ssd.{name}.state", rel_error(final, want_state), tol, rel_error(final, want_state) <= tol)

    run("reference.fp32", ssd_chunked_ref, torch.float32, False, 1e-4)
    run("reference.bf16_autocast", ssd_chunked_ref, torch.float32, True, 1e-4)
    kernel = _cuda_kernel() if device.type == "cuda" else None
    if kernel is None:
        check("ssd.triton", None, None, None, "mamba-ssm's Triton kernel is not importable here")
        return

    def triton(x, dt, A, B, C, chunk_size, D):
        y, final = kernel(x, dt, A, B, C, chunk_size, D=D, return_final_states=True)
        return y, final.float()

    run("triton.fp32", triton, torch.float32, False, 1e-3)
    run("triton.bf16", triton, torch.bfloat16, False, 3e-2)


def stage_attention(device: torch.device, small: bool) -> None:
    from codemill.training.kernels import attention

    g = torch.Generator().manual_seed(1)
    length = 64 if small else 1024
    q = torch.randn(2, 8, length, 64, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, length, 64, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, length, 64, generator=g, dtype=torch.float64)
    scale = 64**-0.5
    keys, values = k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1)
    scores = (q @ keys.transpose(-1, -2)) * scale
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    want = torch.softmax(scores, dim=-1) @ values
    got = attention(*(t.to(device, torch.bfloat16) for t in (q, k, v)), scale)
    error = rel_error(got, want)
    check("attention.gqa.bf16", error, 2e-2, error <= 2e-2)


def stage_conv(device: torch.device) -> None:
    from codemill.training.kernels import causal_conv1d, causal_conv1d_ref
    from codemill.training.kernels.conv import _cuda_kernel

    if device.type != "cuda" or _cuda_kernel() is None:
        check("conv.kernel", None, None, None, "causal-conv1d is not importable here (or no CUDA)")
        return
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 256, 512, generator=g).to(device)
    weight, bias = torch.randn(256, 4, generator=g).to(device), torch.randn(256, generator=g).to(device)
    error = rel_error(causal_conv1d(x, weight, bias)[0], causal_conv1d_ref(x, weight, bias)[0])
    check("conv.kernel.fp32", error, 1e-4, error <= 1e-4)


def _tokens(vocab: int, batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length + 1), generator=torch.Generator().manual_seed(3))


def stage_parity(device: torch.device, shapes: list[str]) -> None:
    """The same weights: CPU fp32 against `device` in bf16 (CUDA), or CPU bf16 autocast (--cpu)."""
    from codemill.training.model import HybridLM, masked_cross_entropy, named_config

    for shape in shapes:
        config = named_config(shape, vocab_size=4096) if shape != "tiny" else named_config("tiny", vocab_size=512)
        torch.manual_seed(0)
        reference = HybridLM(config)
        reference.reset_parameters(seed=0)
        tokens = _tokens(config.vocab_size, 2, 256 if shape == "tiny" else 512)
        loss_ref = masked_cross_entropy(reference(tokens[:, :-1]), tokens[:, 1:])
        loss_ref.backward()
        other = HybridLM(config).to(device)
        other.load_state_dict(reference.state_dict())
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = other(tokens[:, :-1].to(device))
            loss = masked_cross_entropy(logits, tokens[:, 1:].to(device))
        loss.backward()
        loss_error = abs(float(loss) - float(loss_ref)) / abs(float(loss_ref))
        check(f"parity.{shape}.loss", loss_error, 2e-2, loss_error <= 2e-2)
        logit_error = rel_error(logits, reference(tokens[:, :-1]).detach())
        check(f"parity.{shape}.logits", logit_error, 5e-2, logit_error <= 5e-2)
        grads = [
            rel_error(b.grad, a.grad)
            for a, b in zip(reference.parameters(), other.parameters(), strict=False)
            if a.grad is not None and a.grad.norm() > 0
        ]
        worst = max(grads)
        check(f"parity.{shape}.gradients", worst, 0.2, worst <= 0.2, f"median {sorted(grads)[len(grads) // 2]:.3g}")
        del reference, other


def stage_training(device: torch.device, shape: str, length: int, steps: int) -> None:
    from codemill.training.loop import measure_matmul_peak
    from codemill.training.model import HybridLM, flops_per_token, masked_cross_entropy, named_config
    from codemill.training.optim import OptimConfig, Optimizers

    config = named_config(shape, vocab_size=32784 if shape != "tiny" else 512)
    model = HybridLM(config).to(device)
    model.reset_parameters(seed=0)
    optimizers = Optimizers(model, OptimConfig(lr=1e-4, warmup_steps=1), config.hidden_size)
    tokens = _tokens(config.vocab_size, 1, length).to(device)
    peak = measure_matmul_peak(device, dtype=torch.bfloat16)
    losses, times = [], []
    for step in range(steps):
        start = time.perf_counter()
        optimizers.set_step(step, steps)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = masked_cross_entropy(model(tokens[:, :-1]), tokens[:, 1:])
        loss.backward()
        optimizers.clip()
        optimizers.step()
        optimizers.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    seconds = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    tokens_per_s = length / seconds
    mfu = tokens_per_s * flops_per_token(config, length) / peak
    finite = all(math.isfinite(v) for v in losses)
    check(
        f"training.{shape}.finite_and_falling",
        losses[-1] - losses[0],
        None,
        finite and losses[-1] < losses[0],
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {tokens_per_s:,.0f} tokens/s, MFU {mfu:.1%} of the bf16 "
        f"peak {peak / 1e12:.1f} TFLOP/s",
    )
    RESULTS[f"training_{shape}"] = {
        "tokens_per_s": tokens_per_s,
        "mfu": mfu,
        "bf16_peak_flops": peak,
        "losses": losses,
        "seq": length,
    }


def stage_parallel(device: torch.device) -> None:
    """FSDP2 (bf16 mixed precision) and DDP on one device, each in a one-process group."""
    import socket

    import torch.distributed as dist

    from codemill.training.distributed import DistEnv, parallelize
    from codemill.training.model import HybridLM, masked_cross_entropy, named_config

    for mode in ("fsdp", "ddp"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        try:
            config = named_config("tiny", vocab_size=512)
            model = HybridLM(config).to(device)
            model.reset_parameters(seed=0)
            env = DistEnv(0, 1, 0, device)
            model = parallelize(model, env, mode, bf16=mode == "fsdp")
            tokens = _tokens(512, 2, 64).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = masked_cross_entropy(model(tokens[:, :-1]), tokens[:, 1:])
            loss.backward()
            ok = math.isfinite(float(loss)) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
            check(f"parallel.{mode}", float(loss), None, ok)
        finally:
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"))
    parser.add_argument("--cpu", action="store_true", help="the stages that run without a GPU, on small shapes")
    parser.add_argument("--budget-s", type=float, default=480, help="stop starting stages after this many seconds")
    args = parser.parse_args()
    logging_setup()
    on_cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda") if on_cuda else torch.device("cpu")
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # what training uses; the tolerances allow for it
    started = time.monotonic()
    stages = [
        ("versions", lambda: stage_versions(device)),
        ("ssd", lambda: stage_ssd(device, small=not on_cuda)),
        ("attention", lambda: stage_attention(device, small=not on_cuda)),
        ("conv", lambda: stage_conv(device)),
        ("parity", lambda: stage_parity(device, ["tiny", "falcon-h1-0.5b"] if on_cuda else ["tiny"])),
        (
            "training",
            lambda: (
                stage_training(device, "falcon-h1-0.5b", 2048, 12) if on_cuda else stage_training(device, "tiny", 64, 4)
            ),
        ),
        ("parallel", lambda: stage_parallel(device)),
    ]
    for name, run in stages:
        if time.monotonic() - started > args.budget_s:
            check(name, None, None, None, "time budget spent")
            continue
        try:
            run()
        except Exception as err:  # noqa: BLE001 (a stage that breaks is a FAIL with its reason, the rest still run)
            check(name, None, None, False, f"{type(err).__name__}: {err}")
    RESULTS["seconds"] = round(time.monotonic() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2, default=str))
    failed = [c["name"] for c in RESULTS["checks"] if c["status"] == "FAIL"]
    print(
        f"gpu_check: {len(RESULTS['checks'])} checks, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}"
        f" ({RESULTS['seconds']} s) -> {args.out}"
    )
    return 1 if failed else 0


def logging_setup() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
