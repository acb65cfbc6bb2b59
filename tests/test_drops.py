"""One drop-reason grammar: `<kind>` or `<kind>:<detail>`, counted by kind (with its label for
the labelled kinds)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codemill.drops import drop_reason, reason_kind, stats_key


@pytest.mark.parametrize(
    ("reason", "key"),
    [
        (drop_reason("filter", "long_lines"), "filter:long_lines"),
        (drop_reason("unsafe_path", "absolute"), "unsafe_path:absolute"),
        (drop_reason("binary", "nul_bytes"), "binary:nul_bytes"),
        (drop_reason("binary"), "binary"),
        (drop_reason("near_duplicate", "swh:1:cnt:ab;origin=x;path=y"), "near_duplicate"),
        (drop_reason("archive_corrupt", "at member 'a.py': Error: truncated"), "archive_corrupt"),
        (drop_reason("contaminated", "humaneval:HumanEval/0"), "contaminated"),
        (drop_reason("symlink"), "symlink"),
    ],
)
def test_every_reason_is_counted_by_its_kind(reason: str, key: str) -> None:
    assert stats_key(reason) == key
    assert reason_kind(reason) == key.split(":")[0]


@given(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text(max_size=30))
def test_the_kind_reads_back_whatever_the_detail(kind: str, detail: str) -> None:
    assert reason_kind(drop_reason(kind, detail)) == kind


def test_a_kind_is_one_word() -> None:
    with pytest.raises(ValueError, match="one word"):
        drop_reason("near duplicate of", "x")
