"""Run untrusted programs (model generations) in isolation, many in parallel.

Each worker slot is a zygote (`sandbox_zygote.py`): an interpreter started once, which forks a
fresh child per program. Where the machine allows it (it does here, as root), every program runs:
- as an unprivileged user of its slot's own (so one program's fork bomb cannot eat another's
  process quota), every capability dropped, no_new_privs set;
- in new mount, pid and network namespaces: every mount is read-only, /tmp, /dev/shm and
  /var/tmp are fresh size-capped tmpfs owned by the program, it sees only its own processes, and
  it has no network (only a downed loopback);
- in the slot's pids cgroup and memory cgroup (cgroup v1 or v2, when writable);
- under rlimits: CPU seconds, address space, file size, processes, open files, no core dumps;
- with an empty environment, stdin closed, stdout/stderr capped, a wall-clock limit after which
  its whole pid namespace is killed.

When a layer is refused (no root, no unshare, no cgroup rights) the next one still applies and
`isolation()` says what is in force; the README lists the fallbacks. Without root each program is
a fresh interpreter under rlimits. This module never runs a program outside this path.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from codemill.errors import CodemillError
from codemill.eval.isolation import SlotCgroups, probe
from codemill.eval.isolation import isolation as isolation  # reports read it from here
from codemill.progress import bar

Status = Literal["passed", "failed", "timeout", "error"]
ZYGOTE = Path(__file__).with_name("sandbox_zygote.py")


class SandboxError(CodemillError, RuntimeError):
    """The sandbox cannot run programs on this machine (names what was tried)."""


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
    base_uid: int = 200_000  # slot i of process P runs as uid/gid base_uid + (P mod 50,000) * 256 + i


@dataclass
class Outcome:
    status: Status
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


class _Worker:
    """One worker slot: a zygote interpreter (sandbox_zygote.py) that forks an isolated child per
    program, its cgroups, and the pipes to it. Used by one thread at a time."""

    def __init__(self, python: str, slot: int, config: SandboxConfig, found: dict) -> None:
        # A uid of its own per slot and per process: RLIMIT_NPROC counts per uid, so neither another
        # slot nor another process's sandbox (parallel test workers, two eval jobs) shares its quota.
        self.uid = config.base_uid + (os.getpid() % 50_000) * 256 + slot % 256
        self.config = config
        self.namespaces = bool(found["namespaces"])
        self.cgroup = SlotCgroups(found["cgroups"], slot, config.max_processes, config.memory_bytes)
        # Opened here, before the zygote remounts /sys read-only in its own namespace: writes
        # through these descriptors still reach the real cgroup files.
        self.cgroup_fds = [os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in self.cgroup.paths]
        request_r, self.request_w = os.pipe()
        self.response_r, response_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    python,
                    "-I",
                    "-S",
                    "-B",
                    str(ZYGOTE),
                    str(request_r),
                    str(response_w),
                    json.dumps(self.cgroup_fds),
                    "1" if self.namespaces else "0",
                ],
                pass_fds=[request_r, response_w, *self.cgroup_fds],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={},
                start_new_session=True,
            )
        finally:
            os.close(request_r)
            os.close(response_w)
        hello = self._receive(60.0)
        if not hello or not hello.get("ready"):
            stderr = self.process.stderr
            error = stderr.read(4000).decode("utf-8", "replace") if stderr and self.process.poll() is not None else ""
            self.close()
            raise OSError(f"the sandbox worker did not start with {python}: {error.strip()[-300:] or hello}")
        self.report = hello.get("report") or []

    def _receive(self, timeout: float) -> dict | None:
        chunks, need, header = [], 4, True
        deadline = time.monotonic() + timeout
        while need:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.response_r], [], [], remaining)[0]:
                return None
            block = os.read(self.response_r, need)
            if not block:
                return None
            chunks.append(block)
            need -= len(block)
            if not need and header:
                need, header, chunks = struct.unpack(">I", b"".join(chunks))[0], False, []
        return json.loads(b"".join(chunks))

    def run(self, program: str) -> Outcome:
        config = self.config
        started = time.monotonic()
        workdir = None
        if not self.namespaces:  # no private tmpfs: a directory of the program's own
            workdir = tempfile.mkdtemp(prefix="codemill-sandbox-")
            os.chown(workdir, self.uid, self.uid)
        limits = {
            "cpu_seconds": config.cpu_seconds,
            "memory_bytes": config.memory_bytes,
            "file_bytes": config.max_file_bytes,
            "processes": config.max_processes,
            "tmp_bytes": config.tmp_bytes,
            "timeout": config.timeout,
            "max_output_bytes": config.max_output_bytes,
        }
        try:
            data = json.dumps({"program": program, "uid": self.uid, "limits": limits, "workdir": workdir}).encode()
            _write_all(self.request_w, struct.pack(">I", len(data)) + data)
            # The zygote enforces the wall-clock limit; this bound only catches a worker that hung.
            reply = self._receive(config.timeout + 30.0)
        except OSError as err:
            reply = {"failure": str(err)}
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.monotonic() - started
        if reply is None or "failure" in reply:
            self.close()
            detail = "the worker stopped answering" if reply is None else reply["failure"]
            return Outcome("error", f"the sandbox could not run the program: {detail}", None, "", "", seconds)
        code, stdout, stderr = reply["returncode"], reply["stdout"], reply["stderr"]
        if reply["verdict"]:
            status, reason = reply["verdict"]
            return Outcome(status, reason, code, stdout, stderr, seconds)
        if code == 0:
            return Outcome("passed", "", code, stdout, stderr, seconds)
        return Outcome("failed", _reason(code, stderr), code, stdout, stderr, seconds)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        for fd in (self.request_w, self.response_r, *self.cgroup_fds):
            try:
                os.close(fd)
            except OSError:
                pass
        self.cgroup_fds = []
        self.request_w = self.response_r = -1
        try:
            self.process.wait(timeout=5)  # EOF on its request pipe ends it
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.cgroup.remove()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _close_workers(workers: list) -> None:
    for worker in workers:
        if worker is not None:
            worker.close()
    workers.clear()


class Sandbox:
    """Runs programs in isolation, `workers` at a time. With root, each worker slot is a zygote
    (sandbox_zygote.py) that forks an isolated child per program; without root, each program is a
    fresh interpreter under rlimits. Close it (or use it as a context manager) to stop the workers;
    they also stop when this process exits."""

    def __init__(self, config: SandboxConfig = SandboxConfig()) -> None:
        self.config = config
        self.found = probe()
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()  # idle worker slots; run() waits for one
        for slot in range(max(1, config.workers)):
            self._free.put(slot)
        self._workers: list = [None] * max(1, config.workers)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_workers, self._workers)
        self.python = self._find_python()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            _close_workers(self._workers)
            self._workers.extend([None] * max(1, self.config.workers))

    def _find_python(self) -> str:
        """The first interpreter that runs programs inside the sandbox exactly as programs will run
        (the project's own may live under a home the sandbox user cannot read)."""
        candidates = [self.config.python] if self.config.python else [sys.executable, "/usr/bin/python3"]
        tried = []
        for python in candidates:
            self.python = python
            outcome = self.run("import unittest, xml.dom.minidom\nprint('ok')")
            if outcome.status == "passed" and outcome.stdout.strip() == "ok":
                return python
            tried.append(f"{python}: {outcome.reason or outcome.stderr.strip()[-200:]}")
            self.close()
        raise SandboxError(
            "no Python interpreter runs programs inside the sandbox ("
            + "; ".join(tried)
            + "); give SandboxConfig(python=...)"
        )

    def run(self, program: str) -> Outcome:
        """Run one program; passed = exit status 0 within the limits."""
        slot = self._free.get()
        try:
            if not self.found["root"]:
                return _run_unprivileged(program, self.python, self.config)
            worker = self._workers[slot]
            if worker is None or not worker.alive:
                try:
                    worker = self._workers[slot] = _Worker(self.python, slot, self.config, self.found)
                except OSError as err:
                    return Outcome("error", f"the sandbox could not run the program: {err}", None, "", "", 0.0)
            return worker.run(program)
        finally:
            self._free.put(slot)

    def run_many(self, programs: list[str], progress: bool = False) -> list[Outcome]:
        """Every program, `workers` at a time, in input order."""
        with ThreadPoolExecutor(self.config.workers) as pool:
            futures = [pool.submit(self.run, p) for p in programs]
            for future in bar(futures, desc="execute", unit="program", disable=not progress):
                future.result()
            return [f.result() for f in futures]


def _run_unprivileged(program: str, python: str, config: SandboxConfig) -> Outcome:
    """Without root: a fresh interpreter as this user, under rlimits, in its own process group."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="codemill-sandbox-"))
    try:
        program_file = workdir / "main.py"
        program_file.write_text(program)
        process = subprocess.Popen(
            [python, "-I", "-S", "-B", str(program_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            cwd=str(workdir),
            preexec_fn=_rlimits_only(config),
        )
        outs: list[bytes] = []
        errs: list[bytes] = []
        overflow = threading.Event()
        readers = [
            threading.Thread(target=_read_capped, args=(stream, config.max_output_bytes, sink, overflow), daemon=True)
            for stream, sink in ((process.stdout, outs), (process.stderr, errs))
        ]
        for reader in readers:
            reader.start()
        timed_out = False
        deadline = started + config.timeout
        while process.poll() is None:
            if overflow.is_set() or time.monotonic() > deadline:
                timed_out = not overflow.is_set()
                os.killpg(process.pid, signal.SIGKILL)
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
            return Outcome(
                "error", f"output over {config.max_output_bytes} bytes: killed", code, stdout, stderr, seconds
            )
        if timed_out:
            return Outcome("timeout", f"timed out after {config.timeout:g} s", code, stdout, stderr, seconds)
        if code == 0:
            return Outcome("passed", "", code, stdout, stderr, seconds)
        return Outcome("failed", _reason(code, stderr), code, stdout, stderr, seconds)
    except OSError as err:
        return Outcome(
            "error", f"the sandbox could not run the program: {err}", None, "", "", time.monotonic() - started
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
