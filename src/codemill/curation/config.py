"""Configuration of the curation stage (also the `curate:` section of a run config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from codemill.curation.filters import FilterConfig
from codemill.curation.limits import IngestLimits
from codemill.curation.optout import OptOutList
from codemill.dedup.config import DedupConfig
from codemill.errors import UserError
from codemill.settings import reject_unknown


@dataclass(frozen=True)
class CurationConfig:
    filters: FilterConfig = FilterConfig()
    limits: IngestLimits = IngestLimits()
    redact_pii: bool = True
    detect_licenses: bool = True  # ScanCode on licence files; off: only declared licences count
    license_fast_path: bool = True  # ScanCode's reference texts looked up first (license_index.py)
    optout: OptOutList = field(default_factory=OptOutList)
    max_parse_check_bytes: int = 1 << 20  # tree-sitter check on files up to this size
    # Output shards per table: the estimated input bytes over `shard_mb` unless `num_shards` fixes
    # it; either way a function of the input only, so the output is identical on any runner.
    shard_mb: float = 32.0  # target input MB per output shard
    num_shards: int | None = None  # output shards per table (None: from the input size and shard_mb)
    memory_budget_mb: int = 512  # MB of records one worker holds before it spills to local disk
    spill_dir: str | None = None  # local disk for spills (default: the system's temporary folder)
    min_text_coherence: float = 0.5  # charset detection: below this the file is undecodable
    dedup: DedupConfig | None = None  # exact/near dedup inside the curation pipeline; None: off

    def __post_init__(self) -> None:
        for name in ("shard_mb", "memory_budget_mb"):
            if not getattr(self, name) > 0:
                raise UserError(f"curation setting {name!r} must be positive, got {getattr(self, name)!r}")
        if self.num_shards is not None and self.num_shards < 1:
            raise UserError(f"curation setting 'num_shards' must be at least 1, got {self.num_shards!r}")

    @classmethod
    def from_dict(cls, values: dict, base_dir: Path | None = None) -> "CurationConfig":
        reject_unknown(cls, values, "curation")
        kwargs = dict(values)
        if "filters" in kwargs:
            kwargs["filters"] = FilterConfig.from_dict(kwargs["filters"] or {})
        if "limits" in kwargs:
            kwargs["limits"] = IngestLimits(**(kwargs["limits"] or {}))
        if kwargs.get("dedup") is not None:
            kwargs["dedup"] = DedupConfig.from_dict(kwargs["dedup"])
        if isinstance(kwargs.get("optout"), dict):  # as `codemill config show` prints it
            reject_unknown(OptOutList, kwargs["optout"], "optout")
            kwargs["optout"] = OptOutList(**{k: frozenset(v or ()) for k, v in kwargs["optout"].items()})
        elif kwargs.get("optout") is None:
            kwargs.pop("optout", None)
        else:  # a file of SWHIDs, origins and repository names
            path = Path(kwargs["optout"])
            kwargs["optout"] = OptOutList.from_file(path if path.is_absolute() or base_dir is None else base_dir / path)
        return cls(**kwargs)
