"""What isolation this machine grants a sandboxed program (measured once per process), and the
cgroups of a worker slot. The sandbox (sandbox.py) uses every layer that `probe` finds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def probe() -> dict:
    """What isolation this machine grants (measured once per process)."""
    found = {"root": os.geteuid() == 0, "namespaces": False, "cgroups": None, "unshare": shutil.which("unshare")}
    if found["root"] and found["unshare"]:
        try:
            found["namespaces"] = (
                subprocess.run(
                    [
                        str(found["unshare"]),
                        "--net",
                        "--pid",
                        "--fork",
                        "--kill-child",
                        "--mount",
                        "--mount-proc",
                        "true",
                    ],
                    capture_output=True,
                    timeout=10,
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
    if found["root"]:
        for kind, root in (("v1", Path("/sys/fs/cgroup/pids")), ("v2", Path("/sys/fs/cgroup"))):
            probe = root / f"codemill-probe-{os.getpid()}"
            try:
                probe.mkdir()
                ok = (probe / "pids.max").exists()
                probe.rmdir()
            except OSError:
                continue
            if ok:
                found["cgroups"] = kind
                break
    return found


def isolation() -> dict:
    """The isolation in force here, for reports and the README's table."""
    found = probe()
    return {
        "unprivileged_user": found["root"],
        "namespaces": ["mount", "pid", "network"] if found["namespaces"] else [],
        "read_only_filesystem": found["namespaces"],
        "private_tmp": found["namespaces"],
        "no_network": found["namespaces"],
        "cgroups": found["cgroups"],
        "rlimits": ["cpu", "address_space", "file_size", "processes", "open_files", "core"],
        "fallback": None
        if found["namespaces"]
        else (
            "no namespaces: programs run as their own user under rlimits; network and the read-only view "
            "are not enforced"
            if found["root"]
            else "not root: programs run as this user under rlimits only; run as root (or in a container) for isolation"
        ),
    }


class SlotCgroups:
    """A worker slot's pids (and memory) cgroups, made at its start and removed at its end. Named
    after this process, so a later run can remove the ones a killed run left behind."""

    def __init__(self, kind: str | None, slot: int, max_processes: int, memory_bytes: int) -> None:
        self.paths: list[Path] = []
        if kind is None:
            return
        name = f"codemill-{os.getpid()}-{slot}-{uuid.uuid4().hex[:6]}"
        if kind == "v1":
            limits = (
                (Path("/sys/fs/cgroup/pids") / name, "pids.max", str(max_processes)),
                (Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes", str(memory_bytes)),
            )
        else:
            limits = (
                (Path("/sys/fs/cgroup") / name, "pids.max", str(max_processes)),
                (Path("/sys/fs/cgroup") / name, "memory.max", str(memory_bytes)),
            )
        remove_stale_cgroups({path.parent for path, _, _ in limits})
        for path, knob, value in limits:
            try:
                path.mkdir(exist_ok=True)
                (path / knob).write_text(value)
                if path not in self.paths:
                    self.paths.append(path)
            except OSError:
                continue

    def remove(self) -> None:
        for path in self.paths:
            for _ in range(50):  # a killed program's processes are still being reaped
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    try:
                        for pid in (path / "cgroup.procs").read_text().split():
                            os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
                    time.sleep(0.01)


def remove_stale_cgroups(roots: set[Path]) -> None:
    for root in roots:
        for path in root.glob("codemill-*-*"):
            try:
                owner = int(path.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
                try:
                    path.rmdir()
                except OSError:
                    pass
