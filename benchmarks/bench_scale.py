"""Curation at scale: peak memory of the whole process tree, end-to-end throughput and resume.

Runs `codemill curate --dedup near` on the embedded default corpus at each --files count, with the
code of an older commit (a git worktree, put first on PYTHONPATH; the same virtual environment, so
the same corpus) and with this checkout's code, side by side on the same machine:

  peak PSS   the largest sum, over the process and every descendant (pool workers included), of
             the proportional set size (/proc/PID/smaps_rollup), sampled every 0.2 s: pages that
             forked or spawned workers share count once
  MB/s       input bytes (stats.json totals.bytes) over the wall time of the whole command
  resume     the new code killed with SIGKILL at 65% of its uninterrupted time, then rerun: the
             rerun's time as a fraction of the uninterrupted run's

Usage: python benchmarks/bench_scale.py [--files 12000 48000] [--old 9e03144] [--workers 2]
                                        [--resume-files 12000] [--skip-old]
Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(__file__).resolve().parent / "_work"
CODEMILL = str(Path(sys.executable).parent / "codemill")


def _tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            pids.append(child)
            frontier.append(child)
    return pids


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakPss:
    """Samples the process tree's summed PSS in a thread until stopped."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(self.pid)))
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024 / 1024  # GB


def run(src: Path, files: int, out: Path, workers: int, kill_after: float | None = None) -> dict:
    """One `codemill curate` with the code under `src`; returns wall, peak PSS and stats."""
    env = dict(os.environ, PYTHONPATH=str(src), CODEMILL_PROGRESS="0")
    command = [
        CODEMILL,
        "curate",
        "--max-files",
        str(files),
        "--dedup",
        "near",
        "--out",
        str(out),
        "--workers",
        str(workers),
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    sampler = PeakPss(process.pid)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    stderr = process.communicate()[1]
    wall = time.monotonic() - started
    peak = sampler.stop()
    if kill_after is not None:
        return {"wall": wall, "killed": process.returncode == -signal.SIGKILL}
    if process.returncode != 0:
        raise SystemExit(f"{command} failed with {process.returncode}:\n{stderr[-3000:]}")
    stats = json.loads((out / "stats.json").read_text())
    return {
        "wall": wall,
        "peak_gb": peak,
        "mb": stats["totals"]["bytes"] / 1e6,
        "files": stats["totals"]["files"],
        "kept": stats["totals"]["kept_files"],
        "stderr": stderr,
    }


def old_worktree(commit: str) -> Path:
    path = WORK / f"worktree-{commit}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True)
    return path / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[12000, 48000])
    parser.add_argument("--old", default="9e03144", help="the commit to compare with (default: main before issue 18)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resume-files", type=int, default=12000, help="0: skip the resume measurement")
    parser.add_argument("--skip-old", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    codes = {"new": ROOT / "src"}
    if not args.skip_old:
        codes = {"old": old_worktree(args.old), **codes}
    rows, results = [], {}
    for files in args.files:
        for code, src in codes.items():
            out = WORK / f"scale-{code}-{files}"
            shutil.rmtree(out, ignore_errors=True)
            result = run(src, files, out, args.workers)
            results[code, files] = result
            print(
                f"{code} {files}: {result['wall']:.1f} s, {result['peak_gb']:.2f} GB, {result['mb']:.1f} MB, "
                f"{result['files']} files, {result['kept']} kept",
                file=sys.stderr,
                flush=True,
            )
            rows.append(
                f"| {code} | {files} | {result['files']} | {result['mb']:.1f} | {result['wall']:.1f} | "
                f"{result['mb'] / result['wall']:.2f} | {result['peak_gb']:.2f} |"
            )
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, --workers {args.workers}\n")
    print("| code | --max-files | files | MB read | wall s | MB/s | peak PSS GB (process tree) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for code in codes:
        sizes = [results[code, f]["peak_gb"] for f in args.files]
        if len(sizes) > 1:
            print(f"\n{code}: peak at {args.files[-1]} files / at {args.files[0]}: {sizes[-1] / sizes[0]:.2f}x")
    if "old" in codes:
        for files in args.files:
            old, new = results["old", files], results["new", files]
            print(
                f"{files} files: throughput new/old {(new['mb'] / new['wall']) / (old['mb'] / old['wall']):.2f}x, "
                f"peak new/old {new['peak_gb'] / old['peak_gb']:.2f}x"
            )
    if args.resume_files:
        files = args.resume_files
        full = results.get(("new", files)) or run(codes["new"], files, WORK / "scale-resume-ref", args.workers)
        out = WORK / f"scale-resume-{files}"
        shutil.rmtree(out, ignore_errors=True)
        killed = run(codes["new"], files, out, args.workers, kill_after=0.65 * full["wall"])
        rerun = run(codes["new"], files, out, args.workers)
        reused = [line for line in rerun["stderr"].splitlines() if "resum" in line or "reusing" in line]
        print(
            f"\nresume at {files} files: killed at {killed['wall']:.1f} s (SIGKILL: {killed['killed']}); rerun "
            f"{rerun['wall']:.1f} s = {rerun['wall'] / full['wall']:.0%} of the uninterrupted {full['wall']:.1f} s"
        )
        print("\n".join(f"    {line}" for line in reused))


if __name__ == "__main__":
    main()
