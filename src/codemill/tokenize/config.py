"""Configuration of the tokenize stage (also the `tokenize:` section of a run config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from codemill.settings import reject_unknown
from codemill.tokenize.decontam import DecontamConfig
from codemill.tokenize.documents import DocumentConfig
from codemill.tokenize.mixture import MixtureSpec


@dataclass(frozen=True)
class TokenizeConfig:
    decontam: DecontamConfig | None = field(default_factory=DecontamConfig)  # None: no decontamination
    documents: DocumentConfig = DocumentConfig()
    mixture: MixtureSpec = MixtureSpec()  # default: one component "all" with every kept record
    train_tokens: int | None = None  # with max_epochs in the mixture: cap each component's weight
    num_shards: int = 4
    dtype: str = "auto"  # token dtype of the shards: auto (uint16 below 65,500 tokens), uint16, int32

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise ValueError(f"tokenize num_shards must be >= 1, got {self.num_shards}")

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
