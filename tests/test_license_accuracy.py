"""ScanCode licence detection measured on real licence texts: the dist-info licence files of the
installed distributions whose metadata declares an SPDX `License-Expression` (PEP 639)."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from codemill.curation.license import (
    ScancodeDetector,
    classify,
    is_license_file_name,
    normalize_spdx,
)


def _top_level_licence_files(dist: md.Distribution) -> list[Path]:
    files = []
    for f in dist.files or []:
        parts = Path(str(f)).parts
        in_licenses_root = len(parts) == 3 and parts[1] == "licenses"
        at_dist_info_root = len(parts) == 2
        if (
            parts[0].endswith(".dist-info")
            and (in_licenses_root or at_dist_info_root)
            and is_license_file_name(parts[-1])
        ):
            path = Path(dist.locate_file(f))
            if path.is_file():
                files.append(path)
    return sorted(files)


def _symbols(expression: str) -> set[str]:
    from license_expression import get_spdx_licensing

    return {s.key for s in get_spdx_licensing().license_symbols(expression)}


def test_scancode_agrees_with_declared_spdx_licences() -> None:
    cases = []
    for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"].lower()):
        declared = normalize_spdx(dist.metadata.get("License-Expression") or "")
        files = _top_level_licence_files(dist)
        if declared and files and " OR " not in declared:
            cases.append((dist.metadata["Name"], declared, files))
    # At most 40 distributions keep the test near a minute (ScanCode: ~0.2 s a licence file).
    cases = cases[:40]
    assert len(cases) >= 10, "too few installed distributions declare a License-Expression to measure accuracy"
    detector = ScancodeDetector()
    exact = same_class = 0
    misses = []
    for name, declared, files in cases:
        detected = [detector.detect_text(f.read_text(errors="replace")) for f in files]
        found = set().union(*(_symbols(d) for d in detected if d))
        if found == _symbols(declared):
            exact += 1
        else:
            misses.append(f"{name}: declared {declared}, detected {sorted(found)}")
        combined = " AND ".join(f"({d})" for d in detected if d) or None
        same_class += classify(combined) == classify(declared)
    n = len(cases)
    print(
        f"\nlicence detection on {n} distributions: exact SPDX set {exact / n:.2%}, "
        f"licence type {same_class / n:.2%}\n" + "\n".join(misses)
    )
    assert same_class / n >= 0.85, misses
    assert exact / n >= 0.7, misses


def test_the_fast_path_agrees_with_scancode_wherever_it_settles() -> None:
    """Every real licence text the index settles gets ScanCode's own answer; texts it must not
    settle (a changed clause, two licences in one file, a long notice) go to ScanCode."""
    from codemill.curation.license_index import license_index

    index = license_index()
    assert index is not None
    texts = sorted(
        {f.read_text(errors="replace") for dist in md.distributions() for f in _top_level_licence_files(dist)}
    )
    settled = [(text, match) for text in texts if (match := index.match(text)) is not None]
    detector = ScancodeDetector()
    checked = [(match, detector.detect_text(text)) for text, match in settled[:120]]
    disagreements = [(match.spdx, scancode, match.reference) for match, scancode in checked if scancode != match.spdx]
    print(
        f"\nfast path settled {len(settled)} of {len(texts)} distinct licence texts; "
        f"{min(len(settled), 120) - len(disagreements)} of {min(len(settled), 120)} checked agree with ScanCode"
    )
    assert len(settled) >= 20 and not disagreements, disagreements

    mit = next(text for text, match in settled if match.spdx == "MIT")
    changed = mit.replace("free of charge", "for a fee of one dollar")
    two = mit + "\n\n" + next(text for text, match in settled if match.spdx == "BSD-3-Clause")
    notice = mit + "\n\nThis product bundles zlib, which is available under its own terms.\n"
    assert [index.match(t) for t in (changed, two, notice)] == [None, None, None]
    titled = "The MIT License (MIT)\n\n" + mit
    assert index.match(titled).spdx == "MIT"
