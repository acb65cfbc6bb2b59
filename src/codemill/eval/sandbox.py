"""Run untrusted programs (model generations) in isolation, many in parallel.

Each program runs in a fresh interpreter, and, where the machine allows it (it does here, as root):
- as an unprivileged user of its own (one uid per worker slot, so one program's fork bomb cannot
  eat another's process quota), every capability dropped, no_new_privs set;
- in new mount, pid and network namespaces (`unshare`): every mount is remounted read-only, /tmp,
  /dev/shm and /var/tmp are fresh size-capped tmpfs owned by the program, it sees only its own
  processes, and it has no network (only a downed loopback);
- in a pids cgroup and a memory cgroup of its own (cgroup v1 or v2, when writable);
- under rlimits: CPU seconds, address space, file size, processes, open files, no core dumps;
- with an empty environment, stdin closed, stdout/stderr capped, a wall-clock limit after which
  its whole pid namespace is killed.

When a layer is refused (no root, no unshare, no cgroup rights) the next one still applies and
`isolation()` says what is in force; the README lists the fallbacks. This module never runs a
program outside this path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")


@dataclass(frozen=True)
class SandboxConfig:
    timeout: float = 10.0  # wall-clock seconds per program
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # address space (and memory cgroup) limit
    max_processes: int = 32
    max_file_bytes: int = 16 << 20
    tmp_bytes: int = 64 << 20  # size of the private /tmp
    max_output_bytes: int = 64 << 10  # stdout and stderr, each
    workers: int = os.cpu_count() or 1
    python: str | None = None  # interpreter for the programs; default: this one, else /usr/bin/python3
    base_uid: int = 200_000  # worker slot i runs as uid/gid base_uid + i


@dataclass
class Outcome:
    status: str  # passed | failed | timeout | error
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


@lru_cache(maxsize=1)
def _probe() -> dict:
    """What isolation this machine grants (measured once per process)."""
    found = {"root": os.geteuid() == 0, "namespaces": False, "cgroups": None, "unshare": shutil.which("unshare")}
    if found["root"] and found["unshare"]:
        try:
            found["namespaces"] = subprocess.run(
                [found["unshare"], "--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "true"],
                capture_output=True, timeout=10).returncode == 0
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
    found = _probe()
    return {
        "unprivileged_user": found["root"],
        "namespaces": ["mount", "pid", "network"] if found["namespaces"] else [],
        "read_only_filesystem": found["namespaces"],
        "private_tmp": found["namespaces"],
        "no_network": found["namespaces"],
        "cgroups": found["cgroups"],
        "rlimits": ["cpu", "address_space", "file_size", "processes", "open_files", "core"],
        "fallback": None if found["namespaces"] else
        ("no namespaces: programs run as their own user under rlimits; network and the read-only view "
         "are not enforced" if found["root"] else
         "not root: programs run as this user under rlimits only; run as root (or in a container) for isolation"),
    }


class _Cgroup:
    """Per-run pids (and memory) cgroups, removed after the run."""

    def __init__(self, kind: str | None, config: SandboxConfig) -> None:
        self.paths: list[Path] = []
        if kind is None:
            return
        name = f"codemill-{uuid.uuid4().hex[:12]}"
        if kind == "v1":
            limits = ((Path("/sys/fs/cgroup/pids") / name, "pids.max", str(config.max_processes)),
                      (Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes", str(config.memory_bytes)))
        else:
            limits = ((Path("/sys/fs/cgroup") / name, "pids.max", str(config.max_processes)),
                      (Path("/sys/fs/cgroup") / name, "memory.max", str(config.memory_bytes)))
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
            for _ in range(50):  # the namespace's processes are being reaped
                try:
                    path.rmdir()
                    break
                except OSError:
                    try:
                        for pid in (path / "cgroup.procs").read_text().split():
                            os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
                    time.sleep(0.01)


def _read_capped(stream, cap: int, out: list, overflow: threading.Event) -> None:
    size = 0
    while True:
        block = stream.read(65536)
        if not block:
            break
        if size < cap:
            out.append(block[: cap - size])
        size += len(block)
        if size > cap:
            overflow.set()
    stream.close()


class Sandbox:
    def __init__(self, config: SandboxConfig = SandboxConfig()) -> None:
        self.config = config
        self.found = _probe()
        self._slots = list(range(max(1, config.workers)))
        self._lock = threading.Lock()
        self.python = self._find_python()

    def _find_python(self) -> str:
        """The first interpreter that starts inside the sandbox exactly as programs will (the
        running one may live under a home the sandbox user cannot enter)."""
        candidates = [self.config.python] if self.config.python else [sys.executable, "/usr/bin/python3"]
        tried = []
        for python in candidates:
            outcome = self._run("print('ok')", self.config.base_uid, python)
            if outcome.status == "passed" and outcome.stdout.strip() == "ok":
                return python
            tried.append(f"{python}: {outcome.reason or outcome.stderr.strip()[-200:]}")
        raise RuntimeError("no Python interpreter starts inside the sandbox (" + "; ".join(tried) +
                           "); give SandboxConfig(python=...)")

    def _take_slot(self) -> int:
        with self._lock:
            return self._slots.pop() if self._slots else -1

    def _give_slot(self, slot: int) -> None:
        if slot >= 0:
            with self._lock:
                self._slots.append(slot)

    def run(self, program: str) -> Outcome:
        """Run one program; passed = exit status 0 within the limits."""
        slot = self._take_slot()
        try:
            return self._run(program, self.config.base_uid + max(slot, 0), self.python)
        finally:
            self._give_slot(slot)

    def run_many(self, programs: list[str], progress: bool = False) -> list[Outcome]:
        """Every program, `workers` at a time, in input order."""
        with ThreadPoolExecutor(self.config.workers) as pool:
            futures = [pool.submit(self.run, p) for p in programs]
            if progress and os.environ.get("CODEMILL_PROGRESS", "1") != "0":
                from tqdm import tqdm

                for _ in tqdm(futures, desc="execute", unit="program"):
                    _.result()
            return [f.result() for f in futures]

    def _run(self, program: str, uid: int, python: str) -> Outcome:
        config, found = self.config, self.found
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="codemill-sandbox-"))  # 0700, the parent's own
        cgroup = _Cgroup(found["cgroups"], config)
        try:
            program_file = workdir / "program.py"
            program_file.write_text(program)
            limits = {"cpu_seconds": config.cpu_seconds, "memory_bytes": config.memory_bytes,
                      "file_bytes": config.max_file_bytes, "processes": config.max_processes,
                      "tmp_bytes": config.tmp_bytes, "mounts": found["namespaces"],
                      "cgroups": [str(p) for p in cgroup.paths]}
            if found["root"]:
                if not found["namespaces"]:
                    os.chown(workdir, uid, uid)
                command = [sys.executable, "-I", "-S", str(LAUNCHER), str(program_file), str(uid), str(uid), python,
                           json.dumps(limits)]
                if found["namespaces"]:
                    command = [found["unshare"], "--net", "--pid", "--fork", "--kill-child", "--mount",
                               "--mount-proc"] + command
                preexec = os.setsid
            else:  # no root: rlimits only, as this user
                command = [python, "-I", "-S", "-B", str(program_file)]
                preexec = _rlimits_only(config)
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env={}, cwd=str(workdir), preexec_fn=preexec)
            outs: list[bytes] = []
            errs: list[bytes] = []
            overflow = threading.Event()
            readers = [threading.Thread(target=_read_capped, args=(process.stdout, config.max_output_bytes, outs,
                                                                   overflow), daemon=True),
                       threading.Thread(target=_read_capped, args=(process.stderr, config.max_output_bytes, errs,
                                                                   overflow), daemon=True)]
            for reader in readers:
                reader.start()
            timed_out = False
            deadline = started + config.timeout
            while process.poll() is None:
                if overflow.is_set() or time.monotonic() > deadline:
                    timed_out = not overflow.is_set()
                    _kill_group(process)
                    break
                time.sleep(0.002)
            process.wait()
            for reader in readers:
                reader.join(timeout=5)
            stdout = b"".join(outs).decode("utf-8", "replace")
            stderr = b"".join(errs).decode("utf-8", "replace")
            seconds = time.monotonic() - started
            code = process.returncode
            if overflow.is_set():
                return Outcome("error", f"output over {config.max_output_bytes} bytes: killed", code, stdout, stderr,
                               seconds)
            if timed_out:
                return Outcome("timeout", f"timed out after {config.timeout:g} s", code, stdout, stderr, seconds)
            if code == 0:
                return Outcome("passed", "", code, stdout, stderr, seconds)
            return Outcome("failed", _reason(code, stderr), code, stdout, stderr, seconds)
        except OSError as err:
            return Outcome("error", f"the sandbox could not run the program: {err}", None, "", "",
                           time.monotonic() - started)
        finally:
            cgroup.remove()
            shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill unshare's child first (pid 1 of the program's pid namespace: its death takes every
    process inside with it, even one that left the process group), then the group."""
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reason(code: int, stderr: str) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        if -code == signal.SIGXCPU:
            return "CPU time limit"
        return f"killed by {name}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {code}"
    if "MemoryError" in last:
        return "memory limit (MemoryError)"
    return last[:300]


def _rlimits_only(config: SandboxConfig):
    def apply() -> None:
        import resource

        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_seconds, config.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (config.memory_bytes, config.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (config.max_file_bytes, config.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply
