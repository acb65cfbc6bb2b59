"""CPU time of curation's per-file work (language, StarCoder2 filters, PII) over the curation
benchmark's corpus, in one process, without any framework: the W that both sides of
`bench_curation.py` share (its datatrove row calls these same functions).

Usage: python benchmarks/per_file_work.py [--corpus benchmarks/_work/corpus-8000.jsonl] [--rounds 2]
(bench_curation.py --files N writes the corpus.) Prints the best of the rounds per step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from codemill.curation.filters import FilterConfig, apply_filters
from codemill.curation.language import detect_language
from codemill.curation.pii import redact

WORK = Path(__file__).resolve().parent / "_work"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(WORK / "corpus-8000.jsonl"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not corpus.exists():
        raise SystemExit(
            f"{corpus} does not exist; run benchmarks/bench_curation.py --files 8000 first or give --corpus"
        )
    rows = [json.loads(line) for line in corpus.open(encoding="utf-8")]
    config = FilterConfig(enabled=tuple(n for n in FilterConfig().enabled if n != "syntax_errors"))
    # The filters see each file's detected language, as in the pipeline (some filters depend on it).
    languages = [
        detect_language(row["path"], row["content"].encode("utf-8", "surrogateescape")).language for row in rows
    ]
    steps = {
        "language": lambda row, _: detect_language(row["path"], row["content"].encode("utf-8", "surrogateescape")),
        "filters": lambda row, language: apply_filters(row["content"], language, config),
        "pii": lambda row, _: redact(row["content"]),
    }
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for row, language in zip(rows, languages, strict=False):
                step(row, language)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    megabytes = sum(len(row["content"].encode("utf-8", "surrogateescape")) for row in rows) / 1e6
    print(f"{len(rows)} files, {megabytes:.1f} MB; best of {args.rounds} rounds, one process\n")
    print("| step | seconds | MB/s |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {megabytes / seconds:.1f} |")
    total = sum(best.values())
    print(f"| all | {total:.2f} | {megabytes / total:.1f} |")


if __name__ == "__main__":
    main()
