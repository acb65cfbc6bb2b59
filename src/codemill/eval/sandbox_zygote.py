"""One sandbox worker: a long-lived interpreter that forks a fresh, isolated child per program.

Started as root by `codemill.eval.sandbox` (once per worker slot), with the interpreter the
programs will use, `python -I -S -B sandbox_zygote.py REQUEST_FD RESPONSE_FD CGROUP_FDS_JSON`. It
makes itself a mount and a network namespace (when `namespaces` is granted), remounts every
mount point read-only once, preloads the modules benchmark programs import, and then serves
requests. Per program it forks:

- a supervisor (root, trusted: this file) that takes a new mount and pid namespace, mounts a
  fresh size-capped tmpfs on /tmp, /dev/shm and /var/tmp, reads the program's output with caps,
  and kills the namespace at the wall-clock limit or on an output flood;
- an init (pid 1 of that namespace): mounts /proc for the namespace, joins the worker's cgroups
  (through directory descriptors the parent opened before this process remounted /sys), drops to
  the slot's uid/gid with no capabilities and no_new_privs, then forks the program and reaps;
- the program: rlimits, empty environment, closed stdin, and the source run as `__main__`.

Forking a ready interpreter instead of starting one per program is what makes this cheap
(~1 ms a fork against ~40 ms for unshare + launcher + interpreter start). When the init exits
the kernel kills every process left in its namespace, so nothing of a program outlives it.

Deliberately standard-library only and self-contained: it runs under whatever interpreter the
programs need (the system one when the project's lives under an unreadable home).

Protocol: requests and responses are 4-byte big-endian lengths followed by JSON. EOF on the
request pipe (the parent exited or closed the sandbox) ends the worker.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import struct
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
PRIVATE_DIRS = ("/tmp", "/dev/shm", "/var/tmp")
# Imported once here so each forked program finds them loaded (benchmark programs use these).
PRELOAD = (
    "math",
    "re",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "string",
    "typing",
    "hashlib",
    "random",
    "statistics",
    "fractions",
    "decimal",
    "datetime",
    "copy",
    "operator",
    "traceback",
    "types",
    "builtins",
    "threading",
)

libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, fstype, flags, data=None) -> bool:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    return libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)) == 0


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted({line.split()[4].replace("\\040", " ") for line in f}, key=len)


def _read_exact(fd: int, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        block = os.read(fd, size - got)
        if not block:
            raise EOFError
        chunks.append(block)
        got += len(block)
    return b"".join(chunks)


def _write_message(fd: int, message: dict) -> None:
    data = json.dumps(message).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _setup(namespaces: bool) -> list[str]:
    """This worker's own mount + network namespaces and a read-only view of every mount."""
    report: list[str] = []
    if not namespaces:
        return report
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        return [f"unshare: errno {ctypes.get_errno()}"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for point in _mount_points():
        if point in PRIVATE_DIRS or point.startswith("/proc"):
            continue
        devices = 0 if point == "/dev" or point.startswith("/dev/") else MS_NODEV  # /dev/null etc. stay usable
        if not _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | devices):
            report.append(f"ro {point}: errno {ctypes.get_errno()}")
    return report


def _run_program(source: str, filename: str) -> int:
    """The program as `__main__`, with the exit status Python itself would give."""
    import threading
    import traceback
    import types

    module = types.ModuleType("__main__")
    module.__file__ = filename
    module.__builtins__ = __builtins__  # type: ignore[attr-defined]  # as runpy sets it
    sys.modules["__main__"] = module
    sys.argv = [filename]
    status = 0
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except SystemExit as stop:
        if stop.code is None:
            status = 0
        elif isinstance(stop.code, int):
            status = stop.code & 0xFF
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001 - exactly what an interpreter prints and returns
        traceback.print_exc()
        status = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads finish, as at a normal interpreter exit
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        status = status or 1
    return status


def _init(request: dict, cgroup_fds: list[int], out_w: int, err_w: int) -> None:
    """pid 1 of the program's namespace (or, without namespaces, a session leader)."""
    limits = request["limits"]
    uid = gid = request["uid"]
    namespaces = request["namespaces"]
    if namespaces:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        os.setsid()
    for fd in cgroup_fds:  # join the worker's pids / memory cgroups while still root
        try:
            procs = os.open("cgroup.procs", os.O_WRONLY, dir_fd=fd)
            os.write(procs, b"0")
            os.close(procs)
        except OSError as err:
            os.write(err_w, f"sandbox setup: cgroup: {err}\n".encode())
    workdir = request["workdir"]
    filename = os.path.join(workdir, "main.py")
    with open(filename, "w") as f:
        f.write(request["program"])
    os.chown(filename, uid, gid)
    os.chdir(workdir)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, 1 << 16)  # nothing of the worker's channels or descriptors reaches the program
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # every capability goes with uid 0
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the uid change cleared it: die with the supervisor
    try:
        program = os.fork()
    except OSError as err:
        os.write(2, f"sandbox: cannot start the program: {err}\n".encode())
        os._exit(125)
    if program == 0:  # signal dispositions are the interpreter's own, inherited from the worker
        os._exit(_run_program(request["program"], filename))
    os.close(1)
    os.close(2)
    while True:  # reap everything; the program's own status decides
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(125)
        if pid == program:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))


def _collect(
    out_r: int, err_r: int, pidfd: int, deadline: float, limits: dict
) -> tuple[tuple[bytearray, bytearray], tuple[str, str] | None, bool]:
    """The program's stdout and stderr, each capped, until it exits and both pipes close, its time
    runs out or its output passes the cap. Returns the outputs, the verdict (None: it ran to its
    end) and whether it exited."""
    cap = limits["max_output_bytes"]
    outputs = {out_r: bytearray(), err_r: bytearray()}
    sizes = {out_r: 0, err_r: 0}
    verdict = None
    open_fds = [out_r, err_r]
    exited = False
    while open_fds or not exited:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            verdict = ("timeout", f"timed out after {limits['timeout']:g} s")
            break
        ready, _, _ = select.select(open_fds + ([] if exited else [pidfd]), [], [], remaining)
        for fd in ready:
            if fd == pidfd:
                exited = True
                continue
            block = os.read(fd, 65536)
            if not block:
                open_fds.remove(fd)
                continue
            if sizes[fd] < cap:
                outputs[fd] += block[: cap - sizes[fd]]
            sizes[fd] += len(block)
            if sizes[fd] > cap:
                verdict = ("error", f"output over {cap} bytes: killed")
        if verdict:
            break
        if exited and open_fds:  # the namespace is gone; whatever is still buffered is all there is
            deadline = min(deadline, time.monotonic() + 1.0)
    return (outputs[out_r], outputs[err_r]), verdict, exited


def _reap(init: int, namespaces: bool, kill: bool) -> int:
    """Wait for the program's init (killing it, and with no pid namespace its process group, when
    `kill`); returns its exit code, negative for a signal."""
    if kill:
        try:
            os.kill(init, signal.SIGKILL) if namespaces else os.killpg(init, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(init, 0)
    if not namespaces:  # no pid namespace: take the whole process group down with it
        try:
            os.killpg(init, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    code = os.WEXITSTATUS(status)
    if code > 128 and code - 128 < signal.NSIG:
        code = -(code - 128)  # the program died of a signal (the init reports 128 + signal)
    return code


def _supervise(request: dict, cgroup_fds: list[int], result_w: int) -> None:
    """Runs in a child of the worker: one program, start to verdict, written to `result_w`."""
    limits = request["limits"]
    namespaces = request["namespaces"]
    started = time.monotonic()
    uid = request["uid"]
    if namespaces:
        if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
            raise OSError(ctypes.get_errno(), "unshare(mount, pid)")
        size = limits["tmp_bytes"]
        for point in PRIVATE_DIRS:
            if os.path.isdir(point):
                _mount("tmpfs", point, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0700,uid={uid},gid={uid}")
        request["workdir"] = "/tmp"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    init = os.fork()
    if init == 0:
        try:
            os.close(out_r)
            os.close(err_r)
            os.close(result_w)
            _init(request, cgroup_fds, out_w, err_w)
        except BaseException as err:  # noqa: BLE001 - the setup failed: say why on the program's stderr
            os.write(err_w, f"sandbox setup failed: {type(err).__name__}: {err}\n".encode())
        finally:
            os._exit(126)
    os.close(out_w)
    os.close(err_w)
    pidfd = os.pidfd_open(init)
    outputs, verdict, exited = _collect(out_r, err_r, pidfd, started + limits["timeout"], limits)
    code = _reap(init, namespaces, kill=bool(verdict) or not exited)
    _write_message(
        result_w,
        {
            "verdict": verdict,
            "returncode": code,
            "seconds": time.monotonic() - started,
            "stdout": outputs[0].decode("utf-8", "replace"),
            "stderr": outputs[1].decode("utf-8", "replace"),
        },
    )


def main() -> None:
    request_fd, response_fd = int(sys.argv[1]), int(sys.argv[2])
    cgroup_fds = json.loads(sys.argv[3])
    namespaces = sys.argv[4] == "1"
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):  # our own stdio is never a program's
        os.dup2(null, fd)
    report = _setup(namespaces)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    _write_message(response_fd, {"ready": True, "report": report})
    while True:
        try:
            size = struct.unpack(">I", _read_exact(request_fd, 4))[0]
            request = json.loads(_read_exact(request_fd, size))
        except EOFError:
            return
        request["namespaces"] = namespaces
        result_r, result_w = os.pipe()
        supervisor = os.fork()
        if supervisor == 0:
            try:
                os.close(result_r)
                os.close(request_fd)
                os.close(response_fd)
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                _supervise(request, cgroup_fds, result_w)
                os._exit(0)
            except BaseException as err:  # noqa: BLE001 - reported to the parent, never raised here
                try:
                    _write_message(result_w, {"failure": f"{type(err).__name__}: {err}"})
                finally:
                    os._exit(1)
        os.close(result_w)
        data = bytearray()
        while True:
            block = os.read(result_r, 1 << 16)
            if not block:
                break
            data += block
        os.close(result_r)
        os.waitpid(supervisor, 0)
        if len(data) >= 4 and len(data) == 4 + struct.unpack(">I", data[:4])[0]:
            _forward(response_fd, bytes(data))
        else:
            _write_message(response_fd, {"failure": "the sandbox supervisor died without a verdict"})


def _forward(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


if __name__ == "__main__":
    main()
