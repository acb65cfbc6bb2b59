"""The embedded default corpus: the source trees of the Python distributions installed here.

Each distribution is one repository: its files from the RECORD, its origin from Project-URL /
Home-page, its declared licence from the metadata, and the licence files of its dist-info placed
where they apply (PEP 639 `licenses/src/pip/_vendor/x/LICENSE` covers `pip/_vendor/x/`). Real code,
real licences and real vendored copies (pip, setuptools, ...) on every machine, with no download.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
import site
import sys
import sysconfig
import typing
from pathlib import Path, PurePosixPath
from typing import Iterator

from codemill.curation.license import is_license_file_name, spdx_from_classifiers
from codemill.curation.sources.base import (
    RepoSummary,
    SourceItem,
    SourceSpec,
    iter_with_trees,
    repo_key,
)
from codemill.curation.sources.directory import read_local_file

# Compiled artefacts are not part of a source tree.
_SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dylib", ".dll", ".a", ".lib", ".exe")
_METADATA_FILES = {
    "RECORD",
    "METADATA",
    "WHEEL",
    "INSTALLER",
    "REQUESTED",
    "direct_url.json",
    "entry_points.txt",
    "top_level.txt",
    "RECORD.jws",
    "zip-safe",
    "namespace_packages.txt",
}
_URL_LABELS = ("source", "source code", "repository", "code", "github", "homepage", "home")

INSTALLED_URI = "installed:"


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _origin_url(dist: md.Distribution) -> str:
    urls: dict[str, str] = {}
    for entry in dist.metadata.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        urls[label.strip().lower()] = url.strip()
    for label in _URL_LABELS:
        if urls.get(label):
            return urls[label]
    home = _field(dist, "Home-page")
    if home and home.strip().upper() != "UNKNOWN":
        return home.strip()
    return f"https://pypi.org/project/{dist.metadata['Name']}/{dist.version}/"


def _field(dist: md.Distribution, name: str) -> str | None:
    """A metadata field, None when absent (the typed protocol lacks Message.get)."""
    return typing.cast(typing.Any, dist.metadata).get(name)


def declared_license(dist: md.Distribution) -> tuple[str | None, str | None]:
    """(SPDX expression, which metadata field said so) from the package metadata."""
    from codemill.curation.license import normalize_spdx

    expression = _field(dist, "License-Expression")
    if expression:
        normalized = normalize_spdx(expression)
        if normalized:
            return normalized, "declared:License-Expression"
    license_field = (_field(dist, "License") or "").strip()
    if license_field and "\n" not in license_field and len(license_field) < 100:
        normalized = normalize_spdx(license_field)
        if normalized:
            return normalized, "declared:License"
    from_classifiers = spdx_from_classifiers(dist.metadata.get_all("Classifier") or [])
    if from_classifiers:
        return from_classifiers, "declared:classifiers"
    return None, None


def _licence_repo_path(dist_info_rel: PurePosixPath) -> str:
    """Where a dist-info licence file applies in the repository: PEP 639 keeps the source layout
    under `licenses/` (a leading `src/` is the project's source root); older wheels put licence
    files at the top of the dist-info, which is the repository root."""
    parts = dist_info_rel.parts
    if len(parts) > 2 and parts[1] == "licenses":
        inner = list(parts[2:])
        if inner[0] == "src" and len(inner) > 1:
            inner = inner[1:]
        return "/".join(inner)
    return parts[-1]


def _distribution_files(dist: md.Distribution) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(source files, licence files) as (repo path, path relative to the install root).

    Files the RECORD lists but the disk lacks (editable installs list their project files) are
    left out: the default corpus is what is really installed."""
    sources: list[tuple[str, str]] = []
    licences: list[tuple[str, str]] = []
    files = [PurePosixPath(str(f)) for f in (dist.files or [])]
    for rel in files:
        rel_s = str(rel)
        if rel_s.startswith("..") or "__pycache__" in rel.parts or rel_s.endswith(_SKIP_SUFFIXES):
            continue
        if not Path(str(dist.locate_file(rel_s))).is_file():
            continue
        if rel.parts[0].endswith((".dist-info", ".egg-info")):
            if rel.name not in _METADATA_FILES and (is_license_file_name(rel.name) or "licenses" in rel.parts):
                licences.append((_licence_repo_path(rel), rel_s))
            continue
        sources.append((rel_s, rel_s))
    return sources, licences


def _search_path() -> list[str]:
    """sys.path without the entries nested inside a site-packages directory. Those are vendored
    trees put on sys.path by an import (importing setuptools adds site-packages/setuptools/_vendor,
    whose dist-infos then look installed); their files already belong to the distribution that
    vendors them. Without this the default corpus, and so `codemill run`'s stage keys, depended
    on what the process had imported before. (Only site directories count as outer entries: a
    virtualenv inside the working directory, which is on sys.path too, must stay.)"""
    sites = [
        Path(p).resolve()
        for p in [
            *site.getsitepackages(),
            site.getusersitepackages(),
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
        ]
    ]
    entries = [Path(p or ".").resolve() for p in sys.path]
    kept = [e for e in entries if not any(e != s and e.is_relative_to(s) for s in sites)]
    return list(dict.fromkeys(str(e) for e in kept))


def plan_installed(max_files: int | None = None) -> list[SourceSpec]:
    """One SourceSpec per installed distribution, holding the exact file list to read.

    With a cap, licence files are always taken, and source files are taken round-robin across
    distributions, each distribution's files in a stable pseudo-random order (sha1 of the path),
    so the sample spans whole trees (vendored folders included) and is the same on every run.
    """
    seen: set[str] = set()
    dists = []
    for dist in sorted(
        md.distributions(path=_search_path()),
        key=lambda d: (_norm_name(d.metadata["Name"] or ""), str(getattr(d, "_path", ""))),
    ):
        name = _norm_name(dist.metadata["Name"] or "")
        if not name or name in seen or not dist.files:
            continue
        seen.add(name)
        dists.append(dist)

    plans = []
    for dist in dists:
        sources, licences = _distribution_files(dist)
        sources.sort(key=lambda pair: hashlib.sha1(pair[1].encode()).digest())
        plans.append((dist, sources, licences))

    budget = None if max_files is None else max(0, max_files - sum(len(p[2]) for p in plans))
    taken = [0] * len(plans)
    if budget is None:
        taken = [len(p[1]) for p in plans]
    else:
        remaining = budget
        while remaining > 0:
            progressed = False
            for i, (_, sources, _) in enumerate(plans):
                if remaining and taken[i] < len(sources):
                    taken[i] += 1
                    remaining -= 1
                    progressed = True
            if not progressed:
                break

    specs = []
    for (dist, sources, licences), count in zip(plans, taken, strict=True):
        files = sorted(licences + sources[:count])
        if not files:
            continue
        license_spdx, license_source = declared_license(dist)
        root = str(Path(str(dist.locate_file(""))).resolve())
        specs.append(
            SourceSpec(
                kind="installed",
                uri=f"{INSTALLED_URI}{dist.metadata['Name']}=={dist.version}",
                repo=f"{dist.metadata['Name']}-{dist.version}",
                options=(
                    ("root", root),
                    ("files", tuple(files)),
                    ("origin_url", _origin_url(dist)),
                    ("declared_license", license_spdx),
                    ("declared_license_source", license_source),
                ),
            )
        )
    return specs


def read_installed(spec: SourceSpec) -> Iterator[SourceItem]:
    root = Path(spec.option("root"))
    repo = spec.repo or spec.uri
    key = repo_key(spec.uri, repo)
    summary = RepoSummary(
        key,
        repo,
        spec.uri,
        spec.kind,
        origin_url=spec.option("origin_url"),
        declared_license=spec.option("declared_license"),
        declared_license_source=spec.option("declared_license_source"),
    )

    def files():
        for repo_path, real_rel in spec.option("files"):
            item = read_local_file(spec, key, repo, root, real_rel)
            item.path = repo_path
            yield item

    yield from iter_with_trees(spec, files(), summary)
