"""Curation throughput: codemill's Beam pipeline vs datatrove's LocalPipelineExecutor vs the I/O floor.

All three read the same JSONL corpus (files of the installed Python distributions, as the embedded
default corpus samples them) on the same number of worker processes:

  floor      read the JSONL and compute the sha1_git of every file (one process; no framework)
  datatrove  JsonlReader -> [language (enry) + the StarCoder2 filters + PII redaction] -> JsonlWriter,
             the per-file work wrapped as one datatrove PipelineStep, tasks=workers=N; then the full
             default too: the tree-sitter check, and ScanCode (the same detector) on every licence
             file, one ScanCode index per worker as a datatrove step would hold it
  codemill   `codemill curate corpus.jsonl` with the same filters and PII, plus what datatrove does
             not do (SWHIDs, tree SWHIDs, manifest, stats); then with the tree-sitter parse check;
             then the full default (ScanCode on licence files too)

Usage: python benchmarks/bench_curation.py [--files 3000] [--workers 2] [--repeats 1] [--skip-full]
Prints a Markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from codemill.curation.filters import FILTER_ORDER

WORK = Path(__file__).resolve().parent / "_work"


def build_corpus(files: int) -> tuple[Path, int, int]:
    from codemill.curation.sources import plan_sources, read_source
    from codemill.curation.sources.base import SourceFile

    path = WORK / f"corpus-{files}.jsonl"
    count = size = 0
    with open(path, "w", encoding="utf-8") as out:
        for spec in plan_sources([], max_files=files):
            for item in read_source(spec):
                if not isinstance(item, SourceFile) or item.data is None:
                    continue
                try:
                    text = item.data.decode("utf-8")
                except UnicodeDecodeError:
                    continue
                out.write(
                    json.dumps(
                        {
                            "id": f"{item.repo}/{item.path}",
                            "repo": item.repo,
                            "path": item.path,
                            "content": text,
                            "text": text,
                        }
                    )
                    + "\n"
                )
                count += 1
                size += len(item.data)
    return path, count, size


def run_floor(corpus: Path) -> float:
    start = time.perf_counter()
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            data = json.loads(line)["content"].encode()
            hashlib.sha1(b"blob %d\0" % len(data) + data).digest()
    return time.perf_counter() - start


DATATROVE_SCRIPT = r'''
import sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.base import PipelineStep

class CodeCuration(PipelineStep):
    """The same per-file work as codemill's filters: language, StarCoder2 filters, PII; with
    FULL also the tree-sitter check and ScanCode on licence files."""
    name = "codemill filters"
    def __init__(self, full):
        super().__init__()
        self.full = full  # an attribute: the step is pickled to the workers, the script's globals are not
    def run(self, data, rank=0, world_size=1):
        from codemill.curation.filters import FilterConfig, apply_filters
        from codemill.curation.language import detect_language
        from codemill.curation.license import ScancodeDetector, is_license_file
        from codemill.curation.pii import redact
        every = FilterConfig().enabled
        enabled = every if self.full else tuple(n for n in every if n != "syntax_errors")
        config = FilterConfig(enabled=enabled)
        detector = ScancodeDetector() if self.full else None
        for doc in data:
            self.stat_update("total")
            if detector is not None and is_license_file(doc.metadata["path"]):
                doc.metadata["license"] = detector.detect_text(doc.text)
            raw = doc.text.encode("utf-8", "surrogateescape")
            info = detect_language(doc.metadata["path"], raw)
            if apply_filters(doc.text, info.language, config):
                self.stat_update("dropped")
                continue
            doc.text = redact(doc.text).text
            yield doc

corpus, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
LocalPipelineExecutor(
    pipeline=[JsonlReader(corpus, text_key="text", id_key="id"), CodeCuration(sys.argv[4] == "full"), JsonlWriter(out)],
    tasks=workers, workers=workers, logging_dir=out + "_logs", skip_completed=False,
).run()
print(time.perf_counter() - start)
'''


def run_datatrove(corpus: Path, workers: int, full: bool = False) -> float:
    # datatrove splits work by input file: give it one shard per task.
    shard_dir = WORK / "dt_in"
    shutil.rmtree(shard_dir, ignore_errors=True)
    shard_dir.mkdir()
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    for i in range(workers):
        (shard_dir / f"part-{i}.jsonl").write_text("".join(lines[i::workers]), encoding="utf-8")
    out = WORK / "dt_out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(str(out) + "_logs", ignore_errors=True)
    # Timed as codemill is: the whole process, interpreter start and imports included (the
    # in-script timer, which starts after datatrove's ~0.8 s import, is printed but not used).
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", DATATROVE_SCRIPT, str(shard_dir), str(out), str(workers), "full" if full else "same"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start


def run_codemill(corpus: Path, workers: int, *, syntax_check: bool, licenses: bool) -> float:
    out = WORK / "cm_out"
    shutil.rmtree(out, ignore_errors=True)
    config = WORK / "bench.yaml"
    filters = [n for n in FILTER_ORDER if syntax_check or n != "syntax_errors"]
    config.write_text(
        f"curate:\n  redact_pii: true\n  detect_licenses: {str(licenses).lower()}\n"
        f"  filters:\n    enabled: [{', '.join(filters)}]\n"
    )
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "codemill.cli",
            "curate",
            str(corpus),
            "--out",
            str(out),
            "--workers",
            str(workers),
            "--config",
            str(config),
        ],
        check=True,
        capture_output=True,
        env=dict(os.environ, CODEMILL_PROGRESS="0"),
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--skip-full", action="store_true", help="leave out the ScanCode row (minutes on large corpora)"
    )
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    corpus, count, size = build_corpus(args.files)
    print(f"corpus: {count} files, {size / 1e6:.1f} MB ({corpus})", file=sys.stderr)
    runs = {
        "floor (read + sha1_git, 1 process)": lambda: run_floor(corpus),
        "datatrove (language + StarCoder2 filters + PII)": lambda: run_datatrove(corpus, args.workers),
        "codemill, same work (+ SWHIDs, trees, manifest)": lambda: run_codemill(
            corpus, args.workers, syntax_check=False, licenses=False
        ),
        "codemill + tree-sitter check": lambda: run_codemill(corpus, args.workers, syntax_check=True, licenses=False),
        "datatrove full (+ tree-sitter + ScanCode on licence files)": lambda: run_datatrove(
            corpus, args.workers, full=True
        ),
        "codemill full (+ tree-sitter + licences: cache, fast path, ScanCode)": lambda: run_codemill(
            corpus, args.workers, syntax_check=True, licenses=True
        ),
    }
    if args.skip_full:
        runs = {name: run for name, run in runs.items() if " full " not in name}
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            timings[name].append(run())
    datatrove = statistics.median(timings["datatrove (language + StarCoder2 filters + PII)"])
    full_names = [name for name in timings if " full " in name]
    datatrove_full = statistics.median(timings[full_names[0]]) if full_names else None
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; "
        f"{args.workers} workers; {count} files, {size / 1e6:.1f} MB; median of {args.repeats}\n"
    )
    print("| pipeline | seconds | MB/s | files/s | vs datatrove (same work) |")
    print("|---|---|---|---|---|")
    for name, values in timings.items():
        seconds = statistics.median(values)
        anchor = datatrove_full if " full " in name else datatrove
        print(
            f"| {name} | {seconds:.1f} | {size / 1e6 / seconds:.2f} | {count / seconds:.0f} | {anchor / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
