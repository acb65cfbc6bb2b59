"""Configuration of the dedup stage (also the `dedup:` section of a run config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from codemill.dedup.lsh import optimal_bands_rows
from codemill.errors import UserError
from codemill.settings import load_section

if TYPE_CHECKING:  # minhash imports numba (~0.3 s): only the dedup stage needs it, not every config reader
    from codemill.dedup.minhash import MinHashParams

MODES = ("exact", "near")


@dataclass(frozen=True)
class DedupConfig:
    """StarCoder2 / The Stack v2 parameters by default.

    mode 'exact' keeps one record per content hash; 'near' also clusters distinct contents whose
    shingle sets have Jaccard >= threshold (identical contents have Jaccard 1, so it includes
    exact dedup)."""

    mode: Literal["exact", "near"] = "near"  # exact: one record per content; near: Jaccard clusters too
    ngram: int = 5  # tokens per shingle
    num_perm: int = 256  # MinHash permutations
    threshold: float = 0.7  # Jaccard similarity at which two contents are near duplicates
    bands: int | None = None  # LSH bands (set with rows; None: chosen to minimise false positives + negatives)
    rows: int | None = None  # LSH rows per band
    false_positive_weight: float = 0.5  # weight of the false-positive area when bands x rows are chosen
    false_negative_weight: float = 0.5  # weight of the false-negative area when bands x rows are chosen
    seed: int = 42  # MinHash permutation seed
    verify: bool = True  # check candidate pairs by the Jaccard of their shingle sets
    cc_rounds: int | None = None  # most connected-component rounds allowed (None: from the corpus size)
    bucket_sort_limit: int = 10_000  # larger LSH buckets link members only to the bucket minimum
    batch_size: int = 64  # documents per signature batch

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"dedup mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 < self.threshold < 1.0:
            raise UserError(f"dedup threshold must be strictly between 0 and 1, got {self.threshold}")
        for name in ("ngram", "num_perm", "batch_size", "bucket_sort_limit"):
            if getattr(self, name) < 1:
                raise UserError(f"dedup {name} must be >= 1, got {getattr(self, name)}")
        if (self.bands is None) != (self.rows is None):
            raise UserError("dedup bands and rows are set together (or both left out to choose them)")
        if (
            self.bands is not None
            and self.rows is not None
            and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm)
        ):
            raise UserError(
                f"dedup bands x rows = {self.bands} x {self.rows} must be positive and fit in "
                f"num_perm = {self.num_perm}"
            )
        if self.cc_rounds is not None and self.cc_rounds < 1:
            raise UserError(f"dedup cc_rounds must be >= 1, got {self.cc_rounds}")

    @property
    def minhash(self) -> MinHashParams:
        from codemill.dedup.minhash import MinHashParams

        return MinHashParams(num_perm=self.num_perm, ngram=self.ngram, seed=self.seed)

    @property
    def bands_rows(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return optimal_bands_rows(self.threshold, self.num_perm, self.false_positive_weight, self.false_negative_weight)

    def rounds_for(self, num_files: int) -> int:
        """The most connected-component rounds a run may take. Rounds run until one changes
        nothing; alternating large-star/small-star converges in O(log n) rounds in practice
        (Kiveris et al. 2014), so reaching this cap means something is wrong, and the run fails
        loudly, naming this setting."""
        if self.cc_rounds is not None:
            return self.cc_rounds
        return max(12, 2 * max(1, num_files).bit_length() + 8)

    def lsh_partitions_for(self, num_files: int, entries_per_partition: int = 50_000) -> int:
        """How many groups the band keys are packed into on the local runner: about
        `entries_per_partition` (document, band) entries each."""
        bands, _ = self.bands_rows
        return max(1, num_files * bands // entries_per_partition)

    @classmethod
    def from_dict(cls, values: dict) -> "DedupConfig":
        return load_section(cls, values, "dedup")
