"""Configuration of the tokenize stage (also the `tokenize:` section of a run config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from codemill.errors import UserError
from codemill.settings import reject_unknown
from codemill.tokenize.documents import DocumentConfig
from codemill.tokenize.mixture import MixtureSpec

if TYPE_CHECKING:
    from codemill.tokenize.benchmarks import BenchmarkTask


@dataclass(frozen=True)
class DecontamConfig:
    """Which benchmarks, and how they are matched. `benchmarks` maps a name to a JSONL path; the
    names humaneval, mbpp and gsm8k use their loaders (humaneval needs no path: give '')."""

    benchmarks: dict = field(default_factory=lambda: {"humaneval": ""})
    extra_fields: dict = field(default_factory=dict)  # name -> [text fields] for other JSONL files
    ngram: int = 13
    ngram_overlap: float = 0.5
    min_exact_chars: int = 50

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise UserError(f"decontamination ngram must be >= 1, got {self.ngram}")
        if not 0.0 < self.ngram_overlap <= 1.0:
            raise UserError(f"decontamination ngram_overlap must be in (0, 1], got {self.ngram_overlap}")
        pathless = sorted(name for name, path in self.benchmarks.items() if name != "humaneval" and not path)
        if pathless:
            raise UserError(
                f"benchmark(s) {pathless} need the path of their JSONL file (give NAME=PATH); only humaneval "
                "ships with its package"
            )
        unknown = set(self.benchmarks) - {"humaneval", "mbpp", "gsm8k"} - set(self.extra_fields)
        if unknown:
            raise UserError(
                f"benchmark(s) {sorted(unknown)} need their text fields in extra_fields "
                "(name: [field, ...]); built in: humaneval, mbpp, gsm8k"
            )

    def load_tasks(self) -> list[BenchmarkTask]:
        # Here, not at the top: the loaders live with the matcher, which imports numba.
        from codemill.tokenize.benchmarks import load_gsm8k, load_humaneval, load_jsonl_tasks, load_mbpp

        tasks: list[BenchmarkTask] = []
        for name, path in sorted(self.benchmarks.items()):
            if name == "humaneval":
                tasks += load_humaneval(Path(path) if path else None)
            elif not path:
                raise UserError(f"benchmark {name} needs a path to its JSONL file")
            elif name == "mbpp":
                tasks += load_mbpp(Path(path))
            elif name == "gsm8k":
                tasks += load_gsm8k(Path(path))
            else:
                tasks += load_jsonl_tasks(Path(path), name, self.extra_fields[name], "task_id")
        return tasks


@dataclass(frozen=True)
class TokenizeConfig:
    decontam: DecontamConfig | None = field(default_factory=DecontamConfig)  # None: no decontamination
    documents: DocumentConfig = DocumentConfig()
    mixture: MixtureSpec = MixtureSpec()  # default: one component "all" with every kept record
    train_tokens: int | None = None  # planned training tokens: caps each component's weight at its max_epochs
    num_shards: int = 4  # token shards per component
    dtype: Literal["auto", "uint16", "int32"] = "auto"  # token dtype (auto: uint16 below 65,500 tokens)

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise UserError(f"tokenize num_shards must be >= 1, got {self.num_shards}")

    @classmethod
    def from_dict(cls, values: dict) -> "TokenizeConfig":
        reject_unknown(cls, values, "tokenize")
        kwargs = dict(values)
        if "decontam" in kwargs and kwargs["decontam"] is not None:
            reject_unknown(DecontamConfig, kwargs["decontam"], "decontam")
            kwargs["decontam"] = DecontamConfig(**kwargs["decontam"])
        if "mixture" in kwargs:
            kwargs["mixture"] = MixtureSpec.from_dict(kwargs["mixture"] or {})
        if "documents" in kwargs:
            reject_unknown(DocumentConfig, kwargs["documents"], "documents")
            kwargs["documents"] = DocumentConfig(**kwargs["documents"])
        return cls(**kwargs)
