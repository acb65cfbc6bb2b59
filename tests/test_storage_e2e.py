"""Every stage with every path on s3:// against a real S3 API (moto's standalone server):
curate (archives, a table and a Software Heritage export read from the bucket) -> dedup ->
tokenizer train -> tokenize -> manifest verify -> trace -> publish -> the training data path.
The same corpus curated from local disk gives the same records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import build_swh_export

from codemill.cli import main
from codemill.shards import parquet_file, shard_paths
from codemill.storage import filesystem, location

pytestmark = pytest.mark.slow

CODE_DIR = Path(__file__).resolve().parents[1] / "src" / "codemill"


def _corpus(root: Path, repo_dir: Path) -> Path:
    """Archives of real code (codemill's own subpackages; one twice, under another name, for the
    dedup to find), the demo repository, a JSONL table and a Software Heritage export."""
    archives = root / "archives"
    archives.mkdir(parents=True)
    for name in ("dedup", "tokenize", "curation"):
        with tarfile.open(archives / f"{name}.tar.gz", "w:gz") as tar:
            tar.add(CODE_DIR / name, arcname=name, filter=lambda t: None if "__pycache__" in t.name else t)
    (archives / "dedup-fork.tar.gz").write_bytes((archives / "dedup.tar.gz").read_bytes())
    with tarfile.open(archives / "demo.tar.gz", "w:gz") as tar:
        tar.add(repo_dir, arcname="demo")
    rows = [
        {
            "repo": f"table/r{i}",
            "path": f"m{i}.py",
            "content": (CODE_DIR / "storage.py").read_text().replace("RemotePath", f"Remote{i}"),
        }
        for i in range(3)
    ]
    (root / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_swh_export(repo_dir, root / "swh")
    return root


def _upload(local: Path, url: str) -> None:
    fs = filesystem("s3")
    target = url.split("://", 1)[1]
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(file), f"{target}/{file.relative_to(local).as_posix()}")


def test_every_stage_on_s3(s3_bucket, tmp_path, repo_dir, capsys):
    local = _corpus(tmp_path / "corpus", repo_dir)
    _upload(local, f"{s3_bucket}/corpus")
    sources = [f"{s3_bucket}/corpus/archives", f"{s3_bucket}/corpus/table.jsonl", f"{s3_bucket}/corpus/swh"]
    curated, deduped = f"{s3_bucket}/curated", f"{s3_bucket}/deduped"

    assert main(["curate", *sources, "--out", curated, "--no-licenses", "--workers", "1"]) == 0
    stats = json.loads(location(f"{curated}/stats.json").read_text())
    assert stats["totals"]["files"] > 40 and not list(location(curated).glob("_work/*"))
    assert location(f"{curated}/_SUCCESS.json").exists()

    assert main(["dedup", curated, deduped, "--workers", "1"]) == 0
    report = json.loads(location(f"{deduped}/dedup.json").read_text())
    assert report["totals"]["removed_exact"] + report["totals"]["removed_near"] >= 10  # the forked archive

    assert main(["manifest", "verify", deduped]) == 0
    assert "OK" in capsys.readouterr().out

    tokenizer = f"{s3_bucket}/tokenizer"
    assert main(["tokenizer", "train", deduped, "--out", tokenizer, "--vocab-size", "600"]) == 0
    assert location(f"{tokenizer}/tokenizer.json").exists()

    tokens = f"{s3_bucket}/tokens"
    assert (
        main(
            ["tokenize", deduped, tokens, "--tokenizer", tokenizer, "--workers", "1", "--shards", "2", "--no-decontam"]
        )
        == 0
    )
    blend = json.loads(location(f"{tokens}/blend.json").read_text())
    prefix = blend["prefixes"][0]
    assert prefix.startswith("s3://") and location(prefix + ".bin").stat().st_size > 0
    assert main(["trace", prefix, "0"]) == 0
    assert "repository" in capsys.readouterr().out

    assert main(["publish", deduped, "--out", f"{s3_bucket}/release"]) == 0
    parts = shard_paths(location(f"{s3_bucket}/release/dataset/data"))
    assert not parts  # published parts are named train-*, not part-*
    published = sorted(location(f"{s3_bucket}/release/dataset/data").glob("train-*.parquet"))
    kept = sum(parquet_file(p).metadata.num_rows for p in shard_paths(location(f"{deduped}/data")))
    assert sum(parquet_file(p).metadata.num_rows for p in published) == kept
    assert location(f"{s3_bucket}/release/dataset/README.md").exists()

    # The training data path: megatron-core reads the shards through a local cache.
    from codemill.training.data import DataConfig, PackedSamples

    samples = PackedSamples(DataConfig(path=tokens, seq_len=32), 4)
    inputs, targets, _ = samples.batch(0, 2)
    assert inputs.shape == (2, 32) and (inputs[:, 1:] == targets[:, :-1]).all()

    # The same corpus from local disk: the same records, only the sources' URIs differ.
    assert (
        main(
            [
                "curate",
                str(local / "archives"),
                str(local / "table.jsonl"),
                str(local / "swh"),
                "--out",
                str(tmp_path / "local"),
                "--no-licenses",
                "--workers",
                "1",
            ]
        )
        == 0
    )

    def rows(root) -> list[tuple]:
        out = []
        for p in shard_paths(location(root) / "manifest"):
            table = parquet_file(p).read(columns=["repo", "path", "swhid", "kept", "drop_reason"])
            out += list(zip(*(table[c].to_pylist() for c in table.column_names), strict=True))
        return sorted(out, key=repr)

    assert rows(curated) == rows(tmp_path / "local")


def test_a_run_killed_on_s3_resumes_from_the_bucket_to_the_same_bytes(s3_bucket, tmp_path):
    """SIGKILL after some units finished, with sources and output on S3: the rerun finds the
    markers in the bucket, reuses those units and writes the bytes of an uninterrupted run."""
    from test_curate_scale import _corpus as python_files

    local = python_files(tmp_path / "dirs", 12, 10, 4_000)
    archives = tmp_path / "archives"
    archives.mkdir()
    for folder in sorted(local.iterdir()):
        with tarfile.open(archives / f"{folder.name}.tar", "w") as tar:
            tar.add(folder, arcname=folder.name)
    _upload(archives, f"{s3_bucket}/archives")

    def curate(out: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "codemill.cli",
            "curate",
            f"{s3_bucket}/archives",
            "--out",
            out,
            "--no-licenses",
            "--workers",
            "1",
            "--shard-mb",
            "0.1",
        ]

    def objects(root: str) -> dict[str, bytes]:
        return {str(p)[len(root) :]: p.read_bytes() for p in location(root).rglob("*.parquet")}

    reference = f"{s3_bucket}/reference"
    subprocess.run(curate(reference), check=True, capture_output=True, timeout=600)
    assert json.loads(location(f"{reference}/stats.json").read_text())["layout"]["units"] >= 6

    out = f"{s3_bucket}/killed"
    process = subprocess.Popen(
        curate(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while (
        len(list(location(f"{out}/_work/units").glob("*.json"))) < 2
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not location(f"{out}/_SUCCESS.json").exists()
    rerun = subprocess.run(curate(out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming an unfinished run" in rerun.stderr
    assert objects(out) == objects(reference)
    assert not list(location(out).glob("_work/*"))


def test_storage_failures_are_named(s3_bucket, tmp_path, capsys, monkeypatch):
    # A source that is not there.
    assert main(["curate", f"{s3_bucket}/nothing.tar.gz", "--out", str(tmp_path / "o"), "--workers", "1"]) == 2
    assert f"{s3_bucket}/nothing.tar.gz does not exist" in capsys.readouterr().err
    # A bucket that is not there, for the output.
    assert (
        main(
            [
                "curate",
                str(Path(__file__).parent),
                "--out",
                "s3://no-such-bucket-codemill/out",
                "--no-licenses",
                "--workers",
                "1",
            ]
        )
        == 1
    )
    assert "s3://no-such-bucket-codemill/out" in capsys.readouterr().err
    # No credentials.
    with monkeypatch.context() as m:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            m.delenv(name)
        m.setenv("HOME", str(tmp_path))  # no ~/.aws/credentials either
        m.setenv("AWS_EC2_METADATA_DISABLED", "true")
        from codemill.storage import set_storage_options

        # Other options: a new filesystem object (fsspec caches one per set of options, with its credentials).
        options = json.dumps({"s3": {"config_kwargs": {"connect_timeout": 3}}})
        assert (
            main(
                [
                    "--storage-options",
                    options,
                    "curate",
                    str(Path(__file__).parent),
                    "--out",
                    f"{s3_bucket}/o2",
                    "--no-licenses",
                    "--workers",
                    "1",
                ]
            )
            == 1
        )
        assert "Unable to locate credentials" in capsys.readouterr().err
        set_storage_options(None)
    # An endpoint that does not answer: the error names the object and what to check; nothing is
    # left that looks finished.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    options = json.dumps(
        {"s3": {"config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}, "retries": 1}}
    )
    code = main(
        [
            "--storage-options",
            options,
            "curate",
            str(Path(__file__).parent),
            "--out",
            f"{s3_bucket}/out",
            "--no-licenses",
            "--workers",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and f"{s3_bucket}/out" in err and "AWS_ENDPOINT_URL" in err
    from codemill.storage import set_storage_options

    set_storage_options(None)
