"""storage: local paths and fsspec URLs behind one small API; whole-or-absent writes; a real S3
API (moto's server) for the remote half."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from codemill import storage
from codemill.storage import RemotePath, location


def test_location_kinds(tmp_path):
    assert location(str(tmp_path)) == tmp_path
    assert location(f"file://{tmp_path}") == tmp_path
    remote = location("s3://bucket/a/b/")
    assert isinstance(remote, RemotePath) and str(remote) == "s3://bucket/a/b"
    assert str(remote / "c" / "d.parquet") == "s3://bucket/a/b/c/d.parquet"
    assert (remote / "d.tar.gz").name == "d.tar.gz" and (remote / "x.json").suffix == ".json"
    assert str(remote.parent) == "s3://bucket/a"
    assert pickle.loads(pickle.dumps(remote)) == remote
    with pytest.raises(TypeError):
        os.fspath(remote)  # a local-only library must fail loudly, not write to ./s3:


def test_storage_options_shapes(monkeypatch):
    monkeypatch.delenv(storage.STORAGE_OPTIONS_ENV, raising=False)
    storage.set_storage_options('{"endpoint_url": "http://h:1"}')
    assert storage.storage_options("s3") == {"endpoint_url": "http://h:1"}
    storage.set_storage_options({"s3": {"anon": True}, "gcs": {"token": "x"}})
    assert storage.storage_options("s3") == {"anon": True} and storage.storage_options("az") == {}
    with pytest.raises(ValueError, match="not JSON"):
        storage.set_storage_options("{nope")
    storage.set_storage_options(None)
    assert storage.storage_options("s3") == {}


def test_local_staged_write_is_whole_or_absent(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    storage.write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with storage.staged(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["x.bin"]


def test_s3_round_trip(s3_bucket):
    root = location(s3_bucket) / "out"
    assert not root.exists()
    (root / "a.json").write_text(json.dumps({"k": 1}))
    storage.write_bytes(root / "t" / "b.bin", b"\x00\x01")
    assert json.loads((root / "a.json").read_text()) == {"k": 1}
    assert [p.name for p in root.glob("t/*.bin")] == ["b.bin"]
    assert sorted(p.name for p in root.iterdir()) == ["a.json", "t"]
    assert (root / "t" / "b.bin").stat().st_size == 2
    storage.replace(root / "t" / "b.bin", root / "c.bin")
    assert (root / "c.bin").read_bytes() == b"\x00\x01" and not (root / "t" / "b.bin").exists()
    storage.rmtree(root)
    assert not (root / "a.json").exists()
    storage.rmtree(root)  # nothing there is fine


def test_s3_failed_write_leaves_nothing(s3_bucket):
    target = location(s3_bucket) / "obj.bin"
    with pytest.raises(RuntimeError):
        with storage.staged(target) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    with pytest.raises(ValueError, match="whole"):
        target.open("wb")


def test_s3_local_copy_is_cached(s3_bucket, tmp_path):
    target = location(s3_bucket) / "data.bin"
    storage.write_bytes(target, b"abc" * 100)
    copy = storage.local_copy(target, tmp_path)
    assert copy.read_bytes() == b"abc" * 100 and storage.local_copy(target, tmp_path) == copy
    storage.write_bytes(target, b"changed")
    assert storage.local_copy(target, tmp_path).read_bytes() == b"changed"


def test_s3_errors_name_the_object(s3_server, monkeypatch):
    with pytest.raises(FileNotFoundError):
        location("s3://no-such-bucket-here/x.json").read_text()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    storage.set_storage_options(
        {"s3": {"config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}, "retries": 1}}
    )
    try:
        with pytest.raises(storage.StorageError, match=r"s3://bucket/x.json.*endpoint"):
            location("s3://bucket/x.json").write_text("{}")
    finally:
        storage.set_storage_options(None)


def test_local_only_commands_refuse_a_url(capsys):
    from codemill.cli import main

    assert main(["run", "--out", "s3://bucket/run"]) == 2
    assert "s3://bucket/run (out) must be on local disk" in capsys.readouterr().err
    assert main(["export-hf", "s3://bucket/ckpt", "model"]) == 2
