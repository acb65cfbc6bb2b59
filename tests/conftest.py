"""Shared fixtures: small real repositories, archives and Software Heritage exports built on the fly."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("CODEMILL_PROGRESS", "0")
# The suite trains on the CPU on every machine, where its comparisons are exact; tests/test_cuda.py
# holds the GPU tests, with bf16 and TF32 tolerances. CODEMILL_DEVICE=cuda runs the rest there too.
os.environ.setdefault("CODEMILL_DEVICE", "cpu")

SHARED = Path(os.environ.get("CODEMILL_SHARED", Path(__file__).resolve().parents[2] / "shared"))

MIT_TEXT = """MIT License

Copyright (c) 2024 Example Authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

GOOD_PY = '''"""A small module."""


def greet(name: str) -> str:
    """Say hello to someone politely."""
    return f"Hello, {name}!"


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def increment(self) -> int:
        self.count += 1
        return self.count
'''

PII_PY = '''"""Settings module with secrets in it."""

ADMIN_EMAIL = "jane.doe@corp-mail.net"
DOCS_EMAIL = "someone@example.com"
UPSTREAM_SERVER = "8.8.4.4"
LOCAL_SERVER = "192.168.0.10"
DB_PASSWORD = "s3cr3t-Passw0rd"
AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
'''


def git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="T",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="T",
        GIT_COMMITTER_EMAIL="t@example.com",
        GIT_AUTHOR_DATE="2024-01-02T03:04:05Z",
        GIT_COMMITTER_DATE="2024-01-02T03:04:05Z",
    )
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def write_repo_files(root: Path) -> None:
    """A small but real repository: code, a licence, vendored code under another licence,
    PII, a minified line, a binary, an executable script and a symlink."""
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "vendor_lib" / "third").mkdir(parents=True)
    (root / "LICENSE").write_text(MIT_TEXT)
    (root / "src" / "pkg" / "__init__.py").write_text(GOOD_PY)
    (root / "src" / "pkg" / "settings.py").write_text(PII_PY)
    (root / "src" / "pkg" / "minified.js").write_text("var a=" + "1+" * 1500 + "1;\n")
    (root / "src" / "pkg" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (root / "run.sh").write_text("#!/bin/sh\necho 'running the tool now'\n")
    (root / "run.sh").chmod(0o755)
    (root / "vendor_lib" / "third" / "COPYING").write_text(
        "                    GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007\n\n"
        " Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>\n"
        " Everyone is permitted to copy and distribute verbatim copies\n"
        " of this license document, but changing it is not allowed.\n\n"
        "This program is free software: you can redistribute it and/or modify it under the terms of the\n"
        "GNU General Public License as published by the Free Software Foundation, either version 3 of the\n"
        "License, or (at your option) any later version.\n"
    )
    (root / "vendor_lib" / "third" / "impl.py").write_text(GOOD_PY.replace("greet", "wave"))
    os.symlink("src/pkg/__init__.py", root / "link.py")


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "demo-repo"
    root.mkdir()
    write_repo_files(root)
    return root


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    root = tmp_path / "gitdemo"
    root.mkdir()
    write_repo_files(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    git(root, "tag", "-a", "v1", "-m", "release one")
    (root / "src" / "pkg" / "extra.py").write_text("X = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "second")
    git(root, "remote", "add", "origin", "https://example.org/team/gitdemo.git")
    return root


def build_swh_export(repo: Path, out: Path, fmt: str = "parquet") -> Path:
    """A Software Heritage graph export of a git repository: tables + gzip content store, built with swh.model."""
    from swh.model import from_disk

    out.mkdir(parents=True)
    store = out / "content"
    store.mkdir()
    tree = from_disk.Directory.from_disk(
        path=bytes(repo), max_content_length=None, path_filter=from_disk.ignore_named_directories([b".git"])
    )
    contents, entries = [], []
    for node in tree.iter_tree():
        if isinstance(node, from_disk.Content):
            model = node.to_model()
            data = model.with_data().data
            contents.append(
                {
                    "sha1": model.sha1.hex(),
                    "sha1_git": model.sha1_git.hex(),
                    "length": model.length,
                    "status": "visible",
                }
            )
            (store / model.sha1.hex()).write_bytes(gzip.compress(data))
        else:
            directory = node.to_model()
            for entry in directory.entries:
                entries.append(
                    {
                        "directory_id": directory.id.hex(),
                        "name": entry.name,
                        "type": entry.type,
                        "target": entry.target.hex(),
                        "perms": entry.perms,
                    }
                )
    rev = "a" * 40
    tables = {
        "content": contents,
        "directory_entry": entries,
        "revision": [{"id": rev, "directory": tree.hash.hex(), "date": "2024-01-02T03:04:05+00:00"}],
        "origin": [{"id": "o1", "url": "https://example.org/team/exported"}],
        "origin_visit_status": [
            {
                "origin": "https://example.org/team/exported",
                "visit": 1,
                "date": "2024-02-01T00:00:00+00:00",
                "status": "full",
                "snapshot": "b" * 40,
            }
        ],
        "snapshot_branch": [
            {"snapshot_id": "b" * 40, "name": b"refs/heads/main", "target": rev, "target_type": "revision"},
            {"snapshot_id": "b" * 40, "name": b"HEAD", "target": "refs/heads/main", "target_type": "alias"},
        ],
    }
    for name, rows in tables.items():
        table = pa.Table.from_pylist(rows)
        if fmt == "orc":
            from pyarrow import orc

            orc.write_table(table, out / f"{name}.orc")
        else:
            pq.write_table(table, out / f"{name}.parquet")
    return out


# ------------------------------------------------------------------------------------ S3 (moto)
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on localhost (moto's standalone server, as s3fs's own tests run it), started
    for the session and stopped after. Yields the endpoint URL; the test environment points
    botocore and fsspec at it through the standard variables."""
    import socket
    import sys
    import time

    pytest.importorskip("moto", reason="moto[server] is a dev dependency (pip install -e '.[dev]')")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"moto server did not start on port {port}")
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh, empty bucket for one test: its s3:// URL."""
    import re
    import uuid

    from codemill.storage import filesystem

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    filesystem("s3").mkdir(name)
    return f"s3://{name}"
