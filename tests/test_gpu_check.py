"""benchmarks/gpu_check.py's CPU stages, so that the GPU check cannot rot between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_its_cpu_stages(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert "FAIL" not in statuses.values(), statuses
    for name in (
        "ssd.reference.bf16_autocast.forward",
        "attention.gqa.bf16",
        "parity.tiny.loss",
        "training.tiny.finite_and_falling",
        "parallel.fsdp",
        "parallel.ddp",
    ):
        assert statuses[name] == "PASS", name
    assert report["kernels"]["ssd"] == "reference" and report["versions"]["torch"]
    lines = [line for line in done.stdout.splitlines() if line.startswith("CHECK ")]
    assert len(lines) == len(report["checks"]) and all(" metric=" in line and " tol=" in line for line in lines)
