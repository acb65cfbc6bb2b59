"""The training settings (the `train:` section of a run config): optimiser, data and run. This
module imports neither torch nor numba, so that reading and printing a config stays fast."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

from codemill.errors import UserError
from codemill.settings import load_section

if TYPE_CHECKING:
    from codemill.training.model_config import ModelConfig

PrecisionSetting = Literal["auto", "fp32", "bf16"]
Parallel = Literal["ddp", "fsdp"]
PRECISIONS: tuple[str, ...] = typing.get_args(PrecisionSetting)
PARALLEL_MODES: tuple[str, ...] = typing.get_args(Parallel)
Optimizer = Literal["adamw", "muon"]
Schedule = Literal["wsd", "cosine", "constant"]
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Optimizer = "adamw"  # muon: Muon for the hidden matrices, AdamW for the rest
    lr: float = 3e-3  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    multiplier_lr: float | None = None  # default: lr
    multiplier_weight_decay: float = 1e-4
    muon_momentum: float = 0.95
    grad_clip: float = 1.0  # global norm over every group but the multipliers; 0 = off
    schedule: Schedule = "wsd"  # learning-rate schedule
    warmup_steps: int = 20  # steps of linear warmup
    decay_fraction: float = 0.2  # WSD: the last fraction of the steps decays to min_lr
    min_lr_ratio: float = 0.1
    mup_base_width: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if (
            self.lr <= 0
            or self.warmup_steps < 0
            or not 0 <= self.decay_fraction <= 1
            or not 0 <= self.min_lr_ratio <= 1
        ):
            raise UserError("need lr > 0, warmup_steps >= 0, decay_fraction and min_lr_ratio in [0, 1]")

    @classmethod
    def from_dict(cls, values: dict) -> OptimConfig:
        return load_section(cls, values, "optim")


@dataclass(frozen=True)
class DataConfig:
    path: str = ""  # a `codemill tokenize` output directory, or its blend.json
    seq_len: int = 512  # tokens per sample
    seed: int = 1234  # sample order seed

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise UserError(f"data seq_len must be >= 2, got {self.seq_len}")

    @classmethod
    def from_dict(cls, values: dict) -> DataConfig:
        return load_section(cls, values, "data")


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/train"
    model: str = "small"  # named model config: tiny, small, falcon-h1-0.5b
    model_overrides: dict = field(default_factory=dict)  # any ModelConfig field
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 300  # optimizer steps
    micro_batch: int = 8  # samples per micro-batch per process
    grad_accum: int = 1  # micro-batches per step
    seed: int = 0  # model init seed
    log_every: int = 10  # steps between metric lines
    checkpoint_every: int = 100  # steps between checkpoints
    keep_checkpoints: int = 3  # newest checkpoints kept
    keep_optimizer_states: int | None = None  # only the newest N kept checkpoints keep them (None: all)
    max_bad_steps: int = 10
    parallel: Parallel = "ddp"  # data parallelism under torchrun (fsdp: also alone, a one-rank group)
    tensorboard: bool = False
    activation_checkpointing: bool = False  # recompute block activations in backward: less memory, ~1/3 more compute
    peak_flops: float | None = None  # for MFU; measured (a matmul in the run's precision) when not given
    precision: PrecisionSetting = "auto"  # auto: bf16 where the CPU or GPU multiplies it fast, else fp32
    fail_after_step: int | None = None  # fault injection for resume tests: hard exit after this step

    def __post_init__(self) -> None:
        for name in ("steps", "micro_batch", "grad_accum", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"train {name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"train precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return load_section(cls, values, "train")

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        from codemill.training.model_config import named_config

        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.model_overrides.items()}
        if vocab_size is not None and "vocab_size" not in overrides:
            overrides["vocab_size"] = vocab_size
        return named_config(self.model, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)
