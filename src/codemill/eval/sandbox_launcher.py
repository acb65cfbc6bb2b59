"""Runs as root inside fresh user-invisible namespaces (mount, pid, network), set up by `unshare`;
makes the filesystem read-only, gives the program a private tmpfs, joins the cgroups, sets the
rlimits, drops to the sandbox user and execs a fresh interpreter on the program. Deliberately
standard-library only and small: it starts once per program (`python -I -S`).

    argv: program_file uid gid python limits_json
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1

libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    return libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)) == 0


def mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            points.append(point)
    return points


def main() -> None:
    program_file, python, limits = sys.argv[1], sys.argv[4], json.loads(sys.argv[5])
    uid, gid = int(sys.argv[2]), int(sys.argv[3])
    with open(program_file, "rb") as f:
        program = f.read()
    report = []
    for path in limits.get("cgroups", []):  # join the per-run cgroups the parent made (pids, memory)
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as err:
            report.append(f"cgroup {path}: {err}")
    if limits.get("mounts"):
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        private = ("/tmp", "/dev/shm", "/var/tmp")
        for point in sorted(set(mount_points()), key=len):
            if point in private or point.startswith("/proc"):
                continue
            # A read-only bind remount per mount point: the program sees the machine, changes none of it.
            if not mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV):
                report.append(f"ro {point}: errno {ctypes.get_errno()}")
        size = limits["tmp_bytes"]
        for point in private:
            if os.path.isdir(point):
                mount("tmpfs", point, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0700,uid={uid},gid={gid}")
        workdir = "/tmp"
    else:
        workdir = os.path.dirname(program_file)
    target = os.path.join(workdir, "main.py")
    with open(target, "wb") as f:
        f.write(program)
    os.chown(target, uid, gid)
    os.chdir(workdir)
    if report:
        sys.stderr.write("sandbox setup: " + "; ".join(report) + "\n")
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
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # the credential change cleared it: die with unshare
    os.execve(python, [python, "-I", "-S", "-B", target], {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


if __name__ == "__main__":
    main()
