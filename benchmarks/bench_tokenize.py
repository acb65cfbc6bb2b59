"""Tokenization stage throughput against the raw HF tokenizers `encode_batch_fast`.

Same texts (the kept records of a dedup output), same tokenizer (a byte-level BPE trained by
`codemill tokenizer train` on them), same cores (the tokenizer's Rust threads use every core in both).

  raw       tokenizer.encode_batch_fast(all texts) in batches of ~4M characters, ids only
  stage     `codemill tokenize` whole: read Parquet, decontamination (HumanEval, plus MBPP and GSM8K
            when ../shared has them), repository documents with FIM, Megatron shards, trace index
  stage-nd  the same without decontamination

Usage: python benchmarks/bench_tokenize.py [--input DIR] [--vocab-size 8192] [--workers 2] [--repeat 3]
Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
SHARED = Path(os.environ.get("CODEMILL_SHARED", ROOT.parent / "shared"))


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, CODEMILL_PROGRESS="0"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--input",
        default=str(WORK / "codemill-dedup-default"),
        help="a dedup or curation output (default: the one bench_dedup.py writes)",
    )
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds of raw and stage runs")
    args = parser.parse_args()
    source = Path(args.input)
    if not (source / "_SUCCESS.json").exists():
        raise SystemExit(
            f"{source} is not a finished stage output; run benchmarks/bench_dedup.py first or give --input"
        )
    codemill = [sys.executable, "-m", "codemill.cli"]
    tokenizer = WORK / f"tokenizer-{args.vocab_size}"
    if not (tokenizer / "tokenizer.json").exists():
        run(
            codemill
            + ["tokenizer", "train", str(source), "--out", str(tokenizer), "--vocab-size", str(args.vocab_size)]
        )

    from codemill.shards import iter_rows
    from codemill.tokenize.tokenizer import load_tokenizer

    texts = [row["content"] for row in iter_rows(source / "data", columns=["content"]) if row["content"]]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    tok = load_tokenizer(tokenizer)

    def raw() -> tuple[float, int]:
        start = time.perf_counter()
        tokens, batch, size = 0, [], 0
        for text in texts + [None]:
            if text is not None:
                batch.append(text)
                size += len(text)
            if batch and (text is None or size >= 4_000_000):
                tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
                batch, size = [], 0
        return time.perf_counter() - start, tokens

    benchmarks = ["--benchmark", "humaneval"]
    for name, path in (
        ("mbpp", SHARED / "benchmarks/mbpp/mbpp.jsonl"),
        ("gsm8k", SHARED / "benchmarks/gsm8k/test.jsonl"),
    ):
        if path.exists():
            benchmarks += ["--benchmark", f"{name}={path}"]
    stages = (
        ("codemill tokenize (decontamination, documents, FIM, shards, trace)", benchmarks),
        ("codemill tokenize --no-decontam", ["--no-decontam"]),
    )
    # Raw and stage runs alternate, `--repeat` rounds, so slow spells of a shared machine hit both;
    # medians are reported.
    timings: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for _ in range(args.repeat):
        seconds, counts["raw"] = raw()
        timings.setdefault("raw", []).append(seconds)
        for label, extra in stages:
            out = WORK / "tokenized"
            seconds = run(
                codemill
                + ["tokenize", str(source), str(out), "--tokenizer", str(tokenizer), "--workers", str(args.workers)]
                + extra
            )
            timings.setdefault(label, []).append(seconds)
            counts[label] = json.loads((out / "tokenize.json").read_text())["totals"]["tokens"]
    rows = [("raw encode_batch_fast (ids only)", statistics.median(timings["raw"]), counts["raw"], timings["raw"])]
    rows += [(label, statistics.median(timings[label]), counts[label], timings[label]) for label, _ in stages]

    cores = os.cpu_count()
    print(
        f"\n### Tokenize benchmark, {time.strftime('%Y-%m-%d')} ({platform.machine()}, {cores} cores, "
        f"Python {platform.python_version()})\n"
    )
    print(
        f"Input: {len(texts)} kept files of {source.name}, {megabytes:.1f} MB; tokenizer: byte-level BPE, "
        f"{args.vocab_size} tokens, trained by `codemill tokenizer train` on them.\n"
    )
    print(f"Median of {args.repeat} alternating rounds (each round: raw, then each stage run).\n")
    # "vs raw, paired": the median over rounds of (stage tokens/s) / (raw tokens/s) of the same
    # round, so a slow spell of the shared machine that hits one round cancels out.
    # "all rounds": tokens over seconds summed over every round of each side.
    print(
        "| what | wall s (median) | runs s | tokens | tokens/s | tokens/s per core | vs raw (medians) "
        "| vs raw, all rounds | vs raw, paired by round | paired, each round |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    for label, seconds, count, runs in rows:
        rate = count / seconds
        rounds = [(count / r) / (rows[0][2] / raw) for r, raw in zip(runs, timings["raw"], strict=False)]
        overall = (count / sum(runs)) / (rows[0][2] / sum(timings["raw"]))
        print(
            f"| {label} | {seconds:.1f} | {' / '.join(f'{r:.1f}' for r in runs)} | {count:,} | {rate:,.0f} | "
            f"{rate / cores:,.0f} | {rate / (rows[0][2] / rows[0][1]):.2f}x | {overall:.2f}x | "
            f"{statistics.median(rounds):.2f}x | {' / '.join(f'{r:.2f}' for r in rounds)} |"
        )
    print(
        "\nThe stage's wall time includes its start (interpreter, Beam, pipeline construction) and the "
        "tokens it adds (special tokens, repository names and paths)."
    )


if __name__ == "__main__":
    main()
