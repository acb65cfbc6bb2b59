"""A fast path in front of ScanCode: licence texts that are one of ScanCode's own reference texts.

Most licence files are a standard licence pasted verbatim, with a copyright line and perhaps a
title ("MIT License", "BSD 3-Clause License"). ScanCode's matcher costs ~1.4 GB of index per
process and ~40 ms to seconds a text; here a text is normalised (lower case, word tokens, copyright
lines left out) and looked up among ScanCode's licence texts and its rules marked as whole licence
texts (`licensedcode/data`, 2,615 licences and ~4,200 rules in ScanCode 32.5), normalised the
same way. A text is settled when one reference occurs in it token for token and what is left
around it is a short title or trailer made of licence-name words only; anything else (a changed
clause, two licences, a long notice) goes to ScanCode. No library does this lookup: askalono's
Rust matcher measured no faster than ScanCode on these texts (DESIGN.md).

The references and their SPDX expressions are read once (~10 s) and cached under the user's cache
folder (keyed by ScanCode's version) as arrays of token ids: a worker loads them in ~0.05 s and
~22 MB, not ScanCode's ~5 s and ~1.1-1.4 GB.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from array import array
from dataclasses import dataclass
from pathlib import Path

_COPYRIGHT_LINE = re.compile(r"^\W*(?:copyright\b|\(c\)|©|all rights reserved|portions copyright)", re.IGNORECASE)
_TOKEN = re.compile(r"[a-z0-9]+")
_ANCHOR = 6  # leading tokens that key a reference
_MIN_TOKENS = 40  # shorter references (a one-line notice) are left to ScanCode
_MAX_EXTRA = 12  # tokens of title and trailer allowed around the reference
_MAX_START = 40  # the reference must start within this many tokens (after a title)
# Words that may stand around a reference besides those of licence names (titles, SPDX lines).
_EXTRA_WORDS = {
    "the",
    "license",
    "licence",
    "licensed",
    "version",
    "v",
    "spdx",
    "identifier",
    "terms",
    "text",
    "of",
    "under",
    "software",
    "this",
    "project",
    "is",
    "file",
}
_FORMAT = 3  # bump when the cached index layout changes


def normalized_tokens(text: str) -> list[str]:
    """Lower-case word tokens of a licence text without its copyright lines."""
    kept = [line for line in text.lower().splitlines() if not _COPYRIGHT_LINE.match(line)]
    return _TOKEN.findall("\n".join(kept))


@dataclass(frozen=True)
class IndexMatch:
    spdx: str
    reference: str  # the ScanCode licence or rule file that matched
    score: float  # reference tokens / text tokens: 1.0 is the bare reference


@dataclass
class LicenseIndex:
    """References as arrays of token ids (4 bytes a token: as Python strings and tuples the ~3.4M
    tokens of ScanCode's texts cost ~300 MB in every worker), keyed by their first `_ANCHOR` ids."""

    vocabulary: dict[str, int]
    by_anchor: dict[bytes, list[tuple[bytes, str, str]]]  # first ids -> (all ids, spdx, reference name)
    name_words: frozenset[str]
    categories: dict[str, str]  # ScanCode licence key -> its category (Permissive, Copyleft, ...)

    def ids(self, tokens: list[str]) -> bytes:
        unknown = len(self.vocabulary)  # a word no reference has matches none
        return array("I", [self.vocabulary.get(t, unknown) for t in tokens]).tobytes()

    def match(self, text: str) -> IndexMatch | None:
        tokens = normalized_tokens(text)
        ids = self.ids(tokens)
        best: tuple[int, int, str, str] | None = None  # (length, start, spdx, reference)
        for start in range(min(_MAX_START, max(0, len(tokens) - _ANCHOR)) + 1):
            offset = 4 * start
            for ref, spdx, name in self.by_anchor.get(ids[offset : offset + 4 * _ANCHOR], ()):
                length = len(ref) // 4
                if (best is None or length > best[0]) and ids[offset : offset + len(ref)] == ref:
                    best = (length, start, spdx, name)
        if best is None:
            return None
        length, start, spdx, name = best
        extra = tokens[:start] + tokens[start + length :]
        if len(extra) > _MAX_EXTRA or any(not (t.isdigit() or t in self.name_words) for t in extra):
            return None
        return IndexMatch(spdx, name, round(length / len(tokens), 4))


def _frontmatter(text: str) -> tuple[dict[str, str], str]:
    """The flat `key: value` lines of a ScanCode data file's YAML header, and its text."""
    parts = text.split("---", 2)
    if len(parts) < 3:
        return {}, text
    fields = {}
    for line in parts[1].splitlines():
        if ":" in line and not line.startswith((" ", "-")):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip().strip("'\"")
    return fields, parts[2]


def _spdx_of(expression: str, spdx_keys: dict[str, str]) -> str | None:
    """A ScanCode key expression ('gpl-2.0-plus WITH classpath-exception-2.0') in SPDX ids."""
    out = []
    for word in re.findall(r"\(|\)|[^\s()]+", expression):
        if word.lower() in ("and", "or", "with"):
            out.append(word.upper())
        elif word in "()":
            out.append(word)
        elif word in spdx_keys:
            out.append(spdx_keys[word])
        else:
            return None
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def build_index(data_dir: Path) -> LicenseIndex:
    from codemill.curation.license import normalize_spdx

    spdx_keys: dict[str, str] = {}
    categories: dict[str, str] = {}
    name_words: set[str] = set(_EXTRA_WORDS)
    texts: list[tuple[str, str, str]] = []  # (scancode expression, text, file name)
    for entry in sorted(os.scandir(data_dir / "licenses"), key=lambda e: e.name):
        fields, body = _frontmatter(Path(entry.path).read_text(encoding="utf-8", errors="replace"))
        key = fields.get("key") or entry.name.removesuffix(".LICENSE")
        spdx_keys[key] = fields.get("spdx_license_key") or f"LicenseRef-scancode-{key}"
        categories[key] = fields.get("category", "")
        name_words.update(_TOKEN.findall(fields.get("short_name", "").lower()))
        if (
            fields.get("is_deprecated") != "yes"
            and fields.get("is_unknown") != "yes"
            and fields.get("language", "en") == "en"
        ):
            texts.append((key, body, entry.name))
    for entry in sorted(os.scandir(data_dir / "rules"), key=lambda e: e.name):
        fields, body = _frontmatter(Path(entry.path).read_text(encoding="utf-8", errors="replace"))
        if (
            fields.get("is_license_text") == "yes"
            and fields.get("is_deprecated") != "yes"
            and fields.get("language", "en") == "en"
            and fields.get("license_expression")
        ):
            texts.append((fields["license_expression"], body, entry.name))
    by_tokens: dict[tuple[str, ...], set[str]] = {}
    names: dict[tuple[str, ...], str] = {}
    for expression, body, name in texts:
        tokens = tuple(normalized_tokens(body))
        spdx = _spdx_of(expression, spdx_keys)
        if len(tokens) < _MIN_TOKENS or spdx is None:
            continue
        by_tokens.setdefault(tokens, set()).add(normalize_spdx(spdx) or spdx)
        names.setdefault(tokens, name)
    vocabulary: dict[str, int] = {}
    for tokens in by_tokens:
        for token in tokens:
            vocabulary.setdefault(token, len(vocabulary))
    index = LicenseIndex(vocabulary, {}, frozenset(name_words), categories)
    for tokens, expressions in by_tokens.items():
        if len(expressions) == 1:  # the same text under two expressions: ScanCode decides
            ids = index.ids(list(tokens))
            index.by_anchor.setdefault(ids[: 4 * _ANCHOR], []).append((ids, next(iter(expressions)), names[tokens]))
    return index


def _cache_path(version: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "codemill" / f"license-index-scancode-{version}-v{_FORMAT}.pickle"


@functools.lru_cache(maxsize=1)
def license_index() -> LicenseIndex | None:
    """The index for the installed ScanCode (built on first use, then read from the cache), or
    None when ScanCode's data is not installed."""
    try:
        from importlib.metadata import version

        import licensedcode

        scancode_version = version("scancode-toolkit")
    except Exception:  # noqa: BLE001 - no ScanCode: no fast path either
        return None
    path = _cache_path(scancode_version)
    try:
        with open(path, "rb") as cached:
            return pickle.load(cached)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        pass
    index = build_index(Path(licensedcode.__file__).parent / "data")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as out:
            pickle.dump(index, out, protocol=5)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: rebuild next time
    return index
