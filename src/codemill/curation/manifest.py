"""The provenance manifest: one row per input file; and `manifest verify`.

Verification re-reads every original source (sources.json records exactly what was read), recomputes
each file's SWHID with swh.model and compares it with the manifest; then checks that the stored
text of every kept record still hashes to its `stored_sha1_git`, and that every input file has a
manifest row. Any difference is reported with the file's repository and path.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from codemill.curation.process import file_swhid
from codemill.curation.sources import read_source
from codemill.curation.sources.base import RepoSummary, repo_key, spec_from_json
from codemill.curation.swhid import blob_id
from codemill.errors import MissingInputError
from codemill.shards import iter_rows
from codemill.storage import StoragePath, location


@dataclass
class VerifyReport:
    files_checked: int = 0
    kept_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(out_dir: StoragePath | str, *, progress: bool = True) -> VerifyReport:
    out_dir = location(out_dir)
    sources_path = out_dir / "sources.json"
    if not sources_path.exists():
        raise MissingInputError(f"{sources_path} is missing: {out_dir} is not a finished curation output")
    specs = [spec_from_json(s) for s in json.loads(sources_path.read_text())["sources"]]

    manifest: dict[tuple[str, str], list[str | None]] = defaultdict(list)
    for row in iter_rows(out_dir / "manifest", columns=["source_uri", "repo", "path", "swhid"]):
        manifest[(repo_key(row["source_uri"], row["repo"]), row["path"])].append(row["swhid"])

    report = VerifyReport()
    seen: set[tuple[str, str]] = set()
    from tqdm import tqdm

    for spec in tqdm(specs, desc="verify sources", unit=" sources", disable=not progress, leave=False):
        for item in read_source(spec):
            if isinstance(item, RepoSummary):
                continue
            report.files_checked += 1
            key = (item.repo_key, item.path)
            seen.add(key)
            recorded = manifest.get(key)
            actual = file_swhid(item)
            if recorded is None:
                report.problems.append(f"{item.repo}/{item.path}: in the source but not in the manifest")
            elif actual not in recorded:
                report.problems.append(
                    f"{item.repo}/{item.path}: content changed: manifest says {recorded[0]}, "
                    f"source now hashes to {actual}"
                )
    for key in sorted(set(manifest) - seen):
        report.problems.append(f"{key[0]}/{key[1]}: in the manifest but no longer in the source")

    for row in iter_rows(out_dir / "data", columns=["repo", "path", "content", "stored_sha1_git"]):
        report.kept_checked += 1
        actual = blob_id(row["content"].encode("utf-8", "surrogateescape")).hex()
        if actual != row["stored_sha1_git"]:
            report.problems.append(
                f"{row['repo']}/{row['path']}: stored text altered: sha1_git {actual}, "
                f"recorded {row['stored_sha1_git']}"
            )
    return report
