"""Archives, good and hostile: every bad member is a named drop, the good members still come through,
and nothing is ever written outside the output directory."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from codemill.curation.limits import IngestLimits
from codemill.curation.sources import plan_sources, read_source
from codemill.curation.sources.archive import ARCHIVE_ERROR_PATH
from codemill.curation.sources.base import (
    RepoSummary,
    SourceFile,
    SourceSpec,
)

GOOD = b"def ok():\n    return 'fine'\n"


def read(path: Path, limits: IngestLimits = IngestLimits()):
    items = list(read_source(SourceSpec("archive", str(path), limits=limits)))
    files = [i for i in items if isinstance(i, SourceFile)]
    (summary,) = [i for i in items if isinstance(i, RepoSummary)]
    return {f.path: f for f in files}, summary


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def hostile_tar(path: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        add_bytes(tar, "pkg/good.py", GOOD)
        add_bytes(tar, "../escape.py", b"evil = 1\n")
        add_bytes(tar, "/etc/absolute.py", b"evil = 2\n")
        link = tarfile.TarInfo("pkg/link_out")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        hard = tarfile.TarInfo("pkg/hard_out")
        hard.type, hard.linkname = tarfile.LNKTYPE, "../../etc/shadow"
        tar.addfile(hard)
        device = tarfile.TarInfo("pkg/null")
        device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(device)
        fifo = tarfile.TarInfo("pkg/pipe")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
        add_bytes(tar, "pkg/binary.dat", b"\x00\x01\x02" * 100)
        add_bytes(tar, "pkg/latin1.py", "# café crème brûlée\nnom = 'élève'\n".encode("latin-1"))
        add_bytes(tar, "pkg/also_good.py", GOOD + b"# more\n")
    return path


@pytest.mark.parametrize(
    "suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz")]
)
def test_hostile_tar_members_are_named_drops(tmp_path: Path, suffix: str, mode: str) -> None:
    files, summary = read(hostile_tar(tmp_path / f"repo{suffix}", mode))
    assert files["pkg/good.py"].data == GOOD and files["pkg/good.py"].drop_reason is None
    assert files["pkg/also_good.py"].drop_reason is None
    assert files["../escape.py"].drop_reason == "unsafe_path:parent_reference"
    assert files["/etc/absolute.py"].drop_reason == "unsafe_path:absolute"
    assert files["pkg/link_out"].drop_reason == "symlink:/etc/passwd"
    assert files["pkg/hard_out"].drop_reason == "hardlink:../../etc/shadow"
    assert files["pkg/null"].drop_reason == "special_file"
    assert files["pkg/pipe"].drop_reason == "special_file"
    assert files["pkg/binary.dat"].drop_reason == "binary:nul_bytes"
    assert files["pkg/latin1.py"].drop_reason is None  # decoded later by charset detection
    assert summary.complete and summary.root_dir_swhid
    assert not (tmp_path.parent / "escape.py").exists() and not Path("/etc/absolute.py").exists()


def test_tar_zst(tmp_path: Path) -> None:
    plain = hostile_tar(tmp_path / "x.tar", "w")
    target = tmp_path / "repo.tar.zst"
    target.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    files, summary = read(target)
    assert files["pkg/good.py"].data == GOOD
    assert summary.complete


def test_truncated_and_corrupt_archives_keep_good_members(tmp_path: Path) -> None:
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        add_bytes(tar, "first.py", GOOD)
        add_bytes(tar, "second.py", os.urandom(200_000).hex().encode())
        add_bytes(tar, "third.py", GOOD)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(big.read_bytes()[:250_000])
    files, summary = read(truncated)
    assert files["first.py"].data == GOOD
    assert ARCHIVE_ERROR_PATH in files and files[ARCHIVE_ERROR_PATH].drop_reason.startswith("archive_corrupt")
    assert "second.py" in files[ARCHIVE_ERROR_PATH].drop_reason
    assert not summary.complete and "truncated" in summary.error

    gz = tmp_path / "corrupt.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        add_bytes(tar, "first.py", GOOD)
        add_bytes(tar, "second.py", b"".join(b"line %d of a compressible file\n" % i for i in range(20000)))
    raw = bytearray(gz.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    gz.write_bytes(bytes(raw))
    files, summary = read(gz)
    assert files["first.py"].data == GOOD
    assert files[ARCHIVE_ERROR_PATH].drop_reason.startswith("archive_corrupt")

    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not gzip at all" * 10)
    files, summary = read(garbage)
    assert list(files) == [ARCHIVE_ERROR_PATH] and not summary.complete


def test_empty_archives(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "empty.tar.gz", "w:gz"):
        pass
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    for name in ("empty.tar.gz", "empty.zip"):
        files, summary = read(tmp_path / name)
        assert files == {} and summary.complete and summary.root_dir_swhid is None


def test_zip_bomb_and_hostile_zip(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.py", GOOD)
        archive.writestr("bomb.txt", b"\0" * (50 << 20))  # 50 MiB of zeros: ratio ~1000
        archive.writestr("../up.py", b"x = 1\n")
        link = zipfile.ZipInfo("link")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("later.py", GOOD)
    files, summary = read(path)
    assert files["good.py"].data == GOOD
    assert files["bomb.txt"].drop_reason.startswith("zip_bomb:compression ratio")
    assert files["../up.py"].drop_reason == "unsafe_path:parent_reference"
    assert files["link"].drop_reason == "symlink:/etc/passwd"
    assert files["later.py"].drop_reason is None


def test_total_size_cap_stops_the_archive_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(10):
            archive.writestr(f"f{i}.py", GOOD * 100)
    files, summary = read(path, IngestLimits(max_archive_bytes=len(GOOD) * 100 * 3 + 1))
    assert [p for p in files if p.startswith("f")] == ["f0.py", "f1.py", "f2.py"]
    assert files[ARCHIVE_ERROR_PATH].drop_reason.startswith("archive_cap:total uncompressed size")
    assert not summary.complete


def test_large_files_are_skipped_but_hashed(tmp_path: Path) -> None:
    path = tmp_path / "large.tar"
    payload = b"a" * 2048
    with tarfile.open(path, "w") as tar:
        add_bytes(tar, "large.txt", payload)
    files, _ = read(path, IngestLimits(max_file_bytes=1024))
    from codemill.curation.swhid import blob_id

    assert files["large.txt"].drop_reason == "too_large" and files["large.txt"].data is None
    assert files["large.txt"].sha1_git == blob_id(payload)


def test_folder_of_archives_is_many_repositories(tmp_path: Path) -> None:
    folder = tmp_path / "archives"
    folder.mkdir()
    hostile_tar(folder / "one.tar.gz")
    with zipfile.ZipFile(folder / "two.zip", "w") as archive:
        archive.writestr("a.py", GOOD)
    specs = plan_sources([str(folder)])
    assert [s.kind for s in specs] == ["archive", "archive"]
    repos = {s.uri.rsplit("/", 1)[-1] for s in specs}
    assert repos == {"one.tar.gz", "two.zip"}
