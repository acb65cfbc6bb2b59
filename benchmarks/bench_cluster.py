"""Curation on a dask cluster against the local runner, on the same machine.

Runs `codemill curate --max-files N --dedup near` on the embedded default corpus twice per N:
with the local runner (`--workers 2`) and with codemill's DaskRunner on a cluster started here
(`dask scheduler` and `dask worker --nworkers 2 --nthreads 1`, real processes). Reports the wall
times and their ratio, the dask tasks (all pipelines of the run, and the largest one, from the
runner's report), the peak PSS of each worker process (sampled every 0.2 s) and of the driver,
and whether the outputs are byte-identical.

Usage: python benchmarks/bench_cluster.py [--files 3000 12000]
Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import _pss_kb, _tree  # noqa: E402 (the same PSS sampling as the scale benchmark)

WORK = Path(__file__).resolve().parent / "_work" / "cluster"
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peaks:
    """Samples the PSS of process trees every 0.2 s: the driver's, and each dask worker's."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots, self.peaks, self.running = roots, {name: 0 for name in roots}, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            for name, pid in list(self.roots.items()):
                self.peaks[name] = max(self.peaks[name], sum(_pss_kb(p) for p in _tree(pid)))
            time.sleep(0.2)

    def stop(self) -> dict[str, float]:
        self.running = False
        self.thread.join()
        return {name: kb / 1e6 for name, kb in self.peaks.items()}


def _digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.parquet"))}


def _curate(files: int, out: Path, extra: list[str], env: dict, roots: dict[str, int]) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "codemill"), "curate", "--max-files", str(files), "--dedup", "near", "--out", str(out), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peaks = Peaks({"driver": process.pid, **roots})
    _, err = process.communicate()
    seconds = time.perf_counter() - started
    memory = peaks.stop()
    if process.returncode:
        raise SystemExit(f"curate failed:\n{err[-3000:]}")
    return seconds, memory


def _workers(address: str) -> dict[str, int]:
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
        return {f"worker {i}": pid for i, pid in enumerate(sorted(client.run(os.getpid).values()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[3000, 12000])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CODEMILL_PROGRESS="0")
    rows = []
    for files in args.files:
        local_s, local_mem = _curate(files, WORK / "local", ["--workers", "2"], env, {})
        port = _port()
        address = f"tcp://127.0.0.1:{port}"
        cluster = [
            subprocess.Popen(
                [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        ]
        cluster.append(
            subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        )
        try:
            report = WORK / "dask-report.jsonl"
            report.unlink(missing_ok=True)
            dask_s, dask_mem = _curate(
                files,
                WORK / "dask",
                ["--runner=DaskRunner", f"--dask_client_address={address}"],
                dict(env, CODEMILL_DASK_REPORT=str(report)),
                _workers(address),
            )
        finally:
            for process in cluster:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
        pipelines = [json.loads(line) for line in report.read_text().splitlines()]
        same = _digests(WORK / "local") == _digests(WORK / "dask")
        stats = json.loads((WORK / "dask" / "stats.json").read_text())
        rows.append(
            (
                files,
                stats["totals"]["bytes"] / 1e6,
                local_s,
                dask_s,
                len(pipelines),
                sum(p["tasks"] for p in pipelines),
                max(p["tasks"] for p in pipelines),
                local_mem,
                dask_mem,
                same,
            )
        )
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
    )
    print(
        "| files | MB | local s | dask s | dask / local | pipelines | tasks (all) | tasks (largest) "
        "| peak PSS GB: local | driver | worker 0 | worker 1 | same bytes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for files, mb, local_s, dask_s, n, tasks, largest, local_mem, dask_mem, same in rows:
        print(
            f"| {files:,} | {mb:.1f} | {local_s:.1f} | {dask_s:.1f} | {dask_s / local_s:.2f}x | {n} | {tasks:,} | "
            f"{largest:,} | {local_mem['driver']:.2f} | {dask_mem['driver']:.2f} | {dask_mem['worker 0']:.2f} | "
            f"{dask_mem['worker 1']:.2f} | {same} |"
        )


if __name__ == "__main__":
    main()
