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
        if parts[0].endswith(".dist-info") and (in_licenses_root or at_dist_info_root) and is_license_file_name(parts[-1]):
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
    print(f"\nlicence detection on {n} distributions: exact SPDX set {exact / n:.2%}, "
          f"licence type {same_class / n:.2%}\n" + "\n".join(misses))
    assert same_class / n >= 0.85, misses
    assert exact / n >= 0.7, misses
