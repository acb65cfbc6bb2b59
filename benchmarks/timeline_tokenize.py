"""Where the tokenize stage leaves the encoder idle: timestamps of every encode batch in one
in-process `run_tokenize`.

Prints when the first batch is submitted (from the start of `run_tokenize`), every gap of more
than 50 ms between one batch's end and the next one's start, and the time after the last batch.
One run is one sample on a noisy machine; compare runs, not single figures.

Usage: python benchmarks/timeline_tokenize.py [--input DIR] [--tokenizer DIR] [--no-decontam]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
SHARED = Path(os.environ.get("CODEMILL_SHARED", ROOT.parent / "shared"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(WORK / "codemill-dedup-default"))
    parser.add_argument("--tokenizer", default=str(WORK / "tokenizer-8192"))
    parser.add_argument("--out", default=str(WORK / "timeline"))
    parser.add_argument("--no-decontam", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CODEMILL_PROGRESS", "0")

    import codemill.tokenize.documents as documents
    from codemill.pipelines.tokenize import run_tokenize
    from codemill.tokenize.config import DecontamConfig, TokenizeConfig

    batches: list[tuple[float, float]] = []
    encode = documents._encodings

    def timed(tokenizer, pieces):
        start = time.perf_counter()
        result = encode(tokenizer, pieces)
        batches.append((start, time.perf_counter()))
        return result

    documents._encodings = timed  # encode_plans looks it up at call time
    benchmarks = {"humaneval": ""}
    for name, path in (
        ("mbpp", SHARED / "benchmarks/mbpp/mbpp.jsonl"),
        ("gsm8k", SHARED / "benchmarks/gsm8k/test.jsonl"),
    ):
        if path.exists():
            benchmarks[name] = str(path)
    config = dataclasses.replace(
        TokenizeConfig(), decontam=None if args.no_decontam else DecontamConfig(benchmarks=benchmarks)
    )
    started = time.perf_counter()
    run_tokenize(Path(args.input), Path(args.out), Path(args.tokenizer), config)
    total = time.perf_counter() - started
    print(
        f"run_tokenize {total:.2f} s, {len(batches)} encode batches "
        f"({'no decontamination' if args.no_decontam else 'decontamination: ' + ', '.join(benchmarks)})"
    )
    print(f"first batch submitted at +{batches[0][0] - started:.2f} s")
    idle = 0.0
    for (_, end), (start, _) in zip(batches, batches[1:], strict=False):
        if start - end > 0.05:
            print(f"  encoder idle {start - end:.2f} s before the batch at +{start - started:.2f} s")
            idle += start - end
    print(f"idle between batches {idle:.2f} s; after the last batch {total - (batches[-1][1] - started):.2f} s")


if __name__ == "__main__":
    main()
