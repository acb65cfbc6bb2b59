"""Licence detection: the fast path (ScanCode's reference texts, license_index.py) against ScanCode alone.

Takes every licence file of the embedded default corpus (all installed distributions), keeps the
distinct texts, and reports:
  - texts per second of the fast path and of ScanCode (after its index load, which is timed apart)
  - how many texts the fast path settles, split into ScanCode's own data files (a YAML header
    before the text, an artefact of this corpus: scancode-toolkit is installed) and the rest
  - agreement with ScanCode alone on every text the fast path settled

Usage: python benchmarks/bench_licenses.py [--scancode-sample 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from codemill.curation.license import ScancodeDetector, is_license_file
from codemill.curation.sources.installed import plan_installed


def licence_texts() -> list[str]:
    texts = set()
    for spec in plan_installed(None):
        root = Path(spec.option("root"))
        for repo_path, real in spec.option("files"):
            if is_license_file(repo_path):
                try:
                    texts.add((root / real).read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError):
                    pass
    return sorted(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scancode-sample",
        type=int,
        default=300,
        help="texts the fast path leaves that ScanCode is timed on (default 300)",
    )
    args = parser.parse_args()
    from codemill.curation.license_index import license_index

    started = time.perf_counter()
    index = license_index()
    index_load = time.perf_counter() - started
    texts = licence_texts()
    started = time.perf_counter()
    matches = [index.match(text) for text in texts]
    fast_seconds = time.perf_counter() - started
    data_file = [text.lstrip().startswith("---") for text in texts]
    settled = [(t, m) for t, m in zip(texts, matches, strict=False) if m is not None]
    left = [t for t, m in zip(texts, matches, strict=False) if m is None]

    detector = ScancodeDetector()
    started = time.perf_counter()
    detector.detect_text("MIT License")
    scancode_load = time.perf_counter() - started
    started = time.perf_counter()
    agree = sum(detector.detect_text(t) == m.spdx for t, m in settled)
    settled_seconds = time.perf_counter() - started
    sample = left[:: max(1, len(left) // args.scancode_sample)][: args.scancode_sample]
    started = time.perf_counter()
    for text in sample:
        detector.detect_text(text)
    left_seconds = time.perf_counter() - started

    real = [m for m, d in zip(matches, data_file, strict=False) if not d]
    print(
        f"\n### Licence fast path, {time.strftime('%Y-%m-%d')} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, one process)\n"
    )
    print("| texts | distinct | settled by the fast path | agree with ScanCode |")
    print("|---|---|---|---|")
    print(f"| all licence files of the default corpus | {len(texts)} | {len(settled)} | {agree} of {len(settled)} |")
    print(f"| without ScanCode's own data files | {len(real)} | {sum(m is not None for m in real)} | |")
    print(
        f"| ScanCode's data files (YAML header + text) | {sum(data_file)} | "
        f"{sum(m is not None for m, d in zip(matches, data_file, strict=False) if d)} | |"
    )
    print(
        f"\nfast path: {len(texts) / fast_seconds:.0f} texts/s over all {len(texts)} texts "
        f"(index load {index_load:.2f} s, from the cache once built)"
    )
    print(
        f"ScanCode: index load {scancode_load:.1f} s; {len(settled) / settled_seconds:.1f} texts/s on the texts the "
        f"fast path settled, {len(sample) / left_seconds:.1f} texts/s on a sample of {len(sample)} it left"
    )


if __name__ == "__main__":
    main()
