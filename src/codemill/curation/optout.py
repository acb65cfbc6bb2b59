"""Opt-out: repositories, origin URLs or SWHIDs whose files must not be used.

One entry per line in a text file; '#' starts a comment. An entry is an SWHID (swh:1:cnt/dir/rev/snp,
matched against the file, its origin and every tree on its path), an origin URL, or a repository
name. URLs are compared without a trailing slash or `.git` and case-insensitively for the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from codemill.errors import UserError


def _normalize_url(url: str) -> str:
    url = url.strip().rstrip("/").removesuffix(".git")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


@dataclass(frozen=True)
class OptOutList:
    swhids: frozenset[str] = field(default_factory=frozenset)
    origins: frozenset[str] = field(default_factory=frozenset)
    repos: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_entries(cls, entries: list[str]) -> "OptOutList":
        swhids, origins, repos = set(), set(), set()
        for raw in entries:
            entry = raw.split("#", 1)[0].strip()
            if not entry:
                continue
            if entry.startswith("swh:1:"):
                swhids.add(entry.split(";", 1)[0])
            elif "://" in entry:
                origins.add(_normalize_url(entry))
            else:
                repos.add(entry)
        return cls(frozenset(swhids), frozenset(origins), frozenset(repos))

    @classmethod
    def from_file(cls, path: Path) -> "OptOutList":
        try:
            return cls.from_entries(path.read_text(encoding="utf-8").splitlines())
        except OSError as err:
            raise UserError(f"opt-out list {path} cannot be read: {err.strerror or err}") from err

    def __bool__(self) -> bool:
        return bool(self.swhids or self.origins or self.repos)

    def match(
        self,
        *,
        repo: str,
        swhid: str | None = None,
        origin_url: str | None = None,
        origin_swhids: tuple[str | None, ...] = (),
    ) -> str | None:
        """The entry that excludes this file, or None."""
        if repo in self.repos:
            return repo
        for candidate in (swhid, *origin_swhids):
            if candidate and candidate in self.swhids:
                return candidate
        if origin_url and _normalize_url(origin_url) in self.origins:
            return origin_url
        return None
