"""Licences: find licence files, detect them with ScanCode, classify, and let files inherit them.

The Stack v2 rule: a file carries the licences detected in licence files of its own directory and
of every parent directory. When the repository declares an SPDX licence in its metadata (package
metadata, export tables, a table column), that declaration stands for the repository root instead
of the root licence files; licence files in sub-directories (vendored code) still add to it.
`license_source` records which of these decided.

Classification (`classify`): an SPDX expression is `permissive` when it can be satisfied using
permissive licences only (AND: every operand, OR: at least one, `X WITH exception`: X). A licence
id is permissive when it is in `PERMISSIVE_SPDX` below, or, for ScanCode's own `LicenseRef-scancode-*`
ids, when ScanCode's licence database puts it in the category Permissive or Public Domain.
Anything else (copyleft, proprietary, unknown references) is `non_permissive`; no licence found
at all is `no_license`.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Iterable, Literal

from codemill.records import LicenseType

# Permissive SPDX ids: the Blue Oak Council permissive list (the list The Stack v2 used), restricted
# to ids with an SPDX identifier, plus public-domain dedications. Kept sorted; extend with care.
PERMISSIVE_SPDX = frozenset(
    """
    0BSD AAL AFL-1.1 AFL-1.2 AFL-2.0 AFL-2.1 AFL-3.0 Apache-1.0 Apache-1.1 Apache-2.0 APAFML
    Artistic-2.0 BlueOak-1.0.0 blessing BSD-1-Clause BSD-2-Clause BSD-2-Clause-Darwin
    BSD-2-Clause-Patent BSD-2-Clause-Views BSD-3-Clause BSD-3-Clause-Attribution BSD-3-Clause-Clear
    BSD-3-Clause-LBNL BSD-3-Clause-Modification BSD-3-Clause-No-Nuclear-License-2014
    BSD-3-Clause-No-Nuclear-Warranty BSD-3-Clause-Open-MPI BSD-4-Clause BSD-4-Clause-UC
    BSD-Source-Code BSL-1.0 bzip2-1.0.6 CC-BY-1.0 CC-BY-2.0 CC-BY-2.5 CC-BY-3.0 CC-BY-4.0 CC0-1.0
    CNRI-Python curl ECL-2.0 EFL-2.0 Entessa FSFAP FSFUL FSFULLR FTL HPND HPND-Markus-Kuhn
    HPND-sell-variant ICU Info-ZIP Intel ISC JasPer-2.0 libpng libpng-2.0 Libpng LPPL-1.3c
    MIT MIT-0 MIT-advertising MIT-CMU MIT-enna MIT-feh MIT-Modern-Variant MIT-open-group
    MIT-Wu MITNFA MS-PL MulanPSL-2.0 NCSA Net-SNMP NTP OpenSSL PHP-3.0 PHP-3.01 PostgreSQL PSF-2.0
    Python-2.0 Python-2.0.1 Ruby TCL Unicode-3.0 Unicode-DFS-2015 Unicode-DFS-2016 Unlicense
    UPL-1.0 W3C W3C-20150513 WTFPL X11 Xnet xinetd Zlib zlib-acknowledgement ZPL-2.0 ZPL-2.1
    """.split()
)
_SCANCODE_PERMISSIVE_CATEGORIES = {"Permissive", "Public Domain"}

# Names of licence files, as The Stack v2 looked for them (case-insensitive, any extension).
_LICENSE_FILE_RE = re.compile(
    r"^(?:un)?licen[cs]e|^copying|^notice|^copyright|^legal(?:$|\.)|^patents(?:$|\.)"
    r"|^(?:mit|apache|bsd|gpl|lgpl|agpl|mpl|isc|epl)[-_.]?(?:\d[\d.]*)?[-_.]?licen[cs]e"
    r"|\.licen[cs]e$|^licen[cs]e[-_.]",
    re.IGNORECASE,
)

# Trove classifiers that name exactly one SPDX licence (vague ones such as "BSD License" are left out).
_CLASSIFIER_SPDX = {
    "MIT License": "MIT",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "Apache Software License": "Apache-2.0",
    "ISC License (ISCL)": "ISC",
    "Python Software Foundation License": "PSF-2.0",
    "The Unlicense (Unlicense)": "Unlicense",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "zlib/libpng License": "Zlib",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
}


# A source file named after licences (license.py, licensing.go) is code, not a licence text.
_CODE_SUFFIXES = (
    ".py",
    ".js",
    ".ts",
    ".go",
    ".rs",
    ".java",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".rb",
    ".php",
    ".cs",
    ".kt",
    ".scala",
    ".swift",
    ".sh",
    ".pl",
    ".lua",
    ".json",
    ".yml",
    ".yaml",
    ".toml",
    ".xml",
)


def is_license_file_name(name: str) -> bool:
    return bool(_LICENSE_FILE_RE.search(name)) and not name.lower().endswith(_CODE_SUFFIXES)


def is_license_file(path: str) -> bool:
    return is_license_file_name(path.rsplit("/", 1)[-1])


@functools.lru_cache(maxsize=1)
def _spdx_licensing():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def normalize_spdx(expression: str) -> str | None:
    """A valid SPDX expression in canonical form, or None if the text is not one."""
    expression = expression.strip()
    if not expression:
        return None  # validate('') answers the string 'None'
    licensing = _spdx_licensing()
    try:
        info = licensing.validate(expression)
    except Exception:  # license_expression raises several parse error types
        return None
    if info.errors or not info.normalized_expression:
        return None
    return info.normalized_expression


def spdx_from_classifiers(classifiers: Iterable[str]) -> str | None:
    found = []
    for classifier in classifiers:
        if classifier.startswith("License ::"):
            spdx = _CLASSIFIER_SPDX.get(classifier.rsplit("::", 1)[-1].strip())
            if spdx and spdx not in found:
                found.append(spdx)
    if not found:
        return None
    # Several licence classifiers conventionally mean a choice (dual licensing).
    return " OR ".join(found)


@functools.lru_cache(maxsize=4096)
def _is_permissive_id(key: str) -> bool:
    if key in PERMISSIVE_SPDX:
        return True
    if key.startswith("LicenseRef-scancode-"):
        from codemill.curation.license_index import license_index

        # The categories are read from ScanCode's data files (the fast path's index): asking
        # ScanCode's own licence db would load its whole ~1.4 GB matcher index.
        index = license_index()
        if index is not None:
            return index.categories.get(key.removeprefix("LicenseRef-scancode-")) in _SCANCODE_PERMISSIVE_CATEGORIES
        from licensedcode.cache import get_licenses_db

        entry = get_licenses_db().get(key.removeprefix("LicenseRef-scancode-"))
        return bool(entry) and entry.category in _SCANCODE_PERMISSIVE_CATEGORIES
    return False


def _permissive(node) -> bool:
    from license_expression import AND, OR, LicenseSymbol, LicenseWithExceptionSymbol

    if isinstance(node, AND):
        return all(_permissive(arg) for arg in node.args)
    if isinstance(node, OR):
        return any(_permissive(arg) for arg in node.args)
    if isinstance(node, LicenseWithExceptionSymbol):
        return _is_permissive_id(node.license_symbol.key)
    if isinstance(node, LicenseSymbol):
        return _is_permissive_id(node.key)
    return False


@functools.lru_cache(maxsize=65536)
def classify(expression: str | None) -> str:
    if not expression:
        return LicenseType.NO_LICENSE
    try:
        parsed = _spdx_licensing().parse(expression)
    except Exception:
        return LicenseType.NON_PERMISSIVE
    return LicenseType.PERMISSIVE if parsed is not None and _permissive(parsed) else LicenseType.NON_PERMISSIVE


def combine_and(expressions: Iterable[str]) -> str | None:
    """AND of expressions, each operand once, in first-seen order (deterministic)."""
    unique: list[str] = []
    for expression in expressions:
        if expression and expression not in unique:
            unique.append(expression)
    if not unique:
        return None
    if len(unique) == 1:
        return unique[0]
    return " AND ".join(f"({e})" if (" OR " in e or " AND " in e) else e for e in unique)


Detector = Literal["scancode", "index"]  # index: the fast path (license_index.py)


@dataclass(frozen=True)
class LicenseFinding:
    """A licence file's detection: it applies to `directory` and everything below it."""

    directory: str  # '' = repository root
    path: str
    spdx: str | None  # None: a licence-named file in which ScanCode found no licence
    detector: Detector = "scancode"
    score: float | None = None  # the index's match score (reference tokens / text tokens)

    @property
    def source(self) -> str:
        """How `license_source` names this finding: `scancode:PATH` or `index@SCORE:PATH`."""
        return f"{self.detector}@{self.score}:{self.path}" if self.score is not None else f"{self.detector}:{self.path}"


@dataclass(frozen=True)
class Detection:
    """One licence text's outcome, as the cache keeps it."""

    spdx: str | None
    detector: Detector
    score: float | None = None


class ScancodeDetector:
    """ScanCode's licensedcode on licence texts. The index (~7 s to load) is loaded on first use,
    once per process. Measured on the 326 licence files of the default corpus: median 40 ms a
    text, but bundles of third-party licences take seconds (pyarrow's 112 KB LICENSE.txt: 14.5 s)."""

    _lock = threading.Lock()

    def detect_text(self, text: str) -> str | None:
        from licensedcode.detection import detect_licenses

        with self._lock:  # the index is shared; ScanCode's matcher is not documented thread-safe
            detections = list(detect_licenses(query_string=text))
        expression = combine_and(d.license_expression_spdx for d in detections if d.license_expression_spdx)
        if expression:
            expression = normalize_spdx(expression) or expression
        return expression


@dataclass(frozen=True)
class LicenseDecision:
    spdx: str | None
    license_type: str
    source: str | None


def decide_license(
    path: str,
    findings: list[LicenseFinding],
    declared: str | None = None,
    declared_source: str | None = None,
) -> LicenseDecision:
    """The licence of the file at `path`, given the repository's licence findings."""
    directory = path.rsplit("/", 1)[0] if "/" in path else ""
    applicable = [
        f
        for f in findings
        if f.spdx and (f.directory == "" or directory == f.directory or directory.startswith(f.directory + "/"))
    ]
    # Root-first order: the repository licence, then nested (vendored) ones.
    applicable.sort(key=lambda f: (f.directory.count("/") + (f.directory != ""), f.path))
    parts: list[str] = []
    sources: list[str] = []
    if declared:
        parts.append(declared)
        sources.append(declared_source or "declared")
        applicable = [f for f in applicable if f.directory != ""]
    for finding in applicable:
        parts.append(finding.spdx)  # type: ignore[arg-type]
        sources.append(finding.source)
    expression = combine_and(parts)
    return LicenseDecision(expression, classify(expression), "+".join(sources) if sources else None)
