"""The one YAML config of `codemill run`: a section per stage, each the config its own command reads.

    run:       sources, limits and workers of the job       (codemill run)
    curate:    CurationConfig                               (codemill curate --config F)
    dedup:     DedupConfig, applied inside the curation     (codemill dedup --config F)
    tokenizer: vocabulary size and training files           (codemill tokenizer train --config F)
    tokenize:  TokenizeConfig: decontamination, documents, mixture (codemill tokenize --config F)
    train:     TrainConfig (data.path and out_dir are the run's) (codemill train --config F)
    eval:      likelihood curves over the checkpoints, pass@k on the last (codemill eval-signal / eval --config F)
    publish:   the Hugging Face dataset folder

A section left out takes the defaults below, chosen so the whole job finishes in about a quarter
of an hour on 2 cores; `codemill config show` prints every value in force.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codemill.curation.config import CurationConfig
from codemill.dedup.config import DedupConfig
from codemill.errors import UserError
from codemill.settings import load_section, plain, reject_unknown, stage_key  # noqa: F401 (run.py imports them here)
from codemill.tokenize.config import TokenizeConfig
from codemill.training.config import DataConfig, OptimConfig, TrainConfig

SECTIONS = ("run", "curate", "dedup", "tokenizer", "tokenize", "train", "eval", "publish")


class RunConfigError(UserError):
    """A run config that cannot be used: names the file, the setting and the problem."""


@dataclass(frozen=True)
class JobConfig:
    """The `run:` section: what to read and with how many processes."""

    sources: tuple[str, ...] = ()  # empty: the embedded default corpus (installed Python distributions)
    source_kind: str | None = None  # force a source kind (see `codemill curate --help`)
    ref: str | None = None  # git sources: the ref to read
    content_store: str | None = None  # swh_export sources: where the blobs are
    max_files: int | None = 6000  # cap on the embedded default corpus
    workers: int | None = None  # local processes per stage; default: the cores
    beam_args: tuple[str, ...] = ()  # Beam pipeline options, e.g. ["--runner=FlinkRunner", ...]

    @classmethod
    def from_dict(cls, values: dict) -> JobConfig:
        return load_section(cls, values, "run")


@dataclass(frozen=True)
class TokenizerStageConfig:
    """The `tokenizer:` section."""

    vocab_size: int = 8192  # tokens in the vocabulary, special tokens included
    min_frequency: int = 2  # pairs seen fewer times are not merged
    max_files: int = 20_000  # kept files the BPE is trained on

    @classmethod
    def from_dict(cls, values: dict) -> TokenizerStageConfig:
        return load_section(cls, values, "tokenizer")


@dataclass(frozen=True)
class EvalConfig:
    """The `eval:` section: likelihood metrics on every checkpoint (their curves, SQ, SNR), and
    sandboxed pass@k of the last checkpoint."""

    likelihood_tasks: tuple[str, ...] = ("humaneval", "code")  # humaneval, mbpp, gsm8k, code
    likelihood_limit: int = 20  # pairs per likelihood task
    max_tokens: int = 512  # per likelihood pair
    pass_tasks: tuple[str, ...] = ("humaneval",)  # humaneval, mbpp
    pass_limit: int | None = 40  # problems per pass@k task (None: all)
    curve_pass_limit: int = 0  # > 0: also a greedy pass@1 curve on this many problems per checkpoint
    n: int = 1  # samples per problem
    k: tuple[int, ...] = (1,)  # pass@k values (each at most n)
    temperature: float = 0.0  # sampling temperature (0: greedy)
    top_p: float = 0.95  # nucleus sampling
    max_new_tokens: int = 128  # tokens generated per sample
    timeout: float = 10.0  # seconds a program may run in the sandbox
    data: dict = field(default_factory=dict)  # task -> data file (mbpp, gsm8k); else ../shared or the hub

    def __post_init__(self) -> None:
        if self.n < 1 or any(k < 1 for k in self.k):
            raise UserError(f"eval n and k must be >= 1, got n={self.n}, k={list(self.k)}")
        if max(self.k, default=1) > self.n:
            raise UserError(f"eval k={list(self.k)} needs n >= {max(self.k)} samples per problem, got n={self.n}")
        if self.n > 1 and self.temperature == 0:
            raise UserError(f"eval n={self.n} greedy samples would all be the same: set a temperature > 0")

    @classmethod
    def from_dict(cls, values: dict) -> EvalConfig:
        return load_section(cls, values, "eval")


@dataclass(frozen=True)
class PublishConfig:
    """The `publish:` section: the Hugging Face dataset folder of the kept records."""

    name: str = "codemill-curated-code"
    rows_per_shard: int = 20_000
    permissive_only: bool = False  # True: only records whose licence type is permissive

    @classmethod
    def from_dict(cls, values: dict) -> PublishConfig:
        return load_section(cls, values, "publish")


def default_train() -> TrainConfig:
    """The small hybrid for a run of minutes on 2 cores: every checkpoint kept for the eval curves,
    the optimiser state only in the newest two (resume needs one; the other is a fallback)."""
    return TrainConfig(
        out_dir="",
        model="small",
        data=DataConfig(seq_len=256, seed=1234),
        steps=80,
        micro_batch=4,
        log_every=5,
        checkpoint_every=10,
        keep_checkpoints=1000,
        keep_optimizer_states=2,
        optim=OptimConfig(lr=2e-3, warmup_steps=10, decay_fraction=0.2),
    )


@dataclass(frozen=True)
class RunConfig:
    run: JobConfig = JobConfig()
    curate: CurationConfig = CurationConfig()
    dedup: DedupConfig | None = DedupConfig(mode="near")  # None (null in YAML): no dedup
    tokenizer: TokenizerStageConfig = TokenizerStageConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    train: TrainConfig = field(default_factory=default_train)
    eval: EvalConfig = EvalConfig()
    publish: PublishConfig = PublishConfig()

    def __post_init__(self) -> None:
        problems = []
        train = self.train
        if self.curate.dedup is not None:
            problems.append("dedup goes in its own `dedup:` section, not under `curate:`")
        if train.data.path or train.out_dir:
            problems.append(
                "train.data.path and train.out_dir are the run's own (the tokenize stage's output and "
                "the train stage's directory): leave them out"
            )
        checkpoints = train.steps // train.checkpoint_every
        if checkpoints < 2:
            problems.append(
                f"train.steps={train.steps} with checkpoint_every={train.checkpoint_every} makes "
                f"{checkpoints} checkpoint(s); the eval curves need at least 2"
            )
        elif train.keep_checkpoints < checkpoints:
            problems.append(
                f"train.keep_checkpoints={train.keep_checkpoints} would delete checkpoints the eval "
                f"curves read: set it >= {checkpoints} (steps / checkpoint_every)"
            )
        vocab = train.model_overrides.get("vocab_size")
        if vocab is not None and vocab != self.tokenizer.vocab_size:
            problems.append(
                f"train.model_overrides.vocab_size={vocab} differs from tokenizer.vocab_size="
                f"{self.tokenizer.vocab_size}: leave it out (the model takes the tokenizer's)"
            )
        from codemill.eval.code_tasks import TASKS
        from codemill.eval.names import SIGNAL_TASKS

        for name, tasks, allowed in (
            ("likelihood_tasks", self.eval.likelihood_tasks, SIGNAL_TASKS),
            ("pass_tasks", self.eval.pass_tasks, tuple(TASKS)),
        ):
            unknown = [t for t in tasks if t not in allowed]
            if unknown:
                problems.append(f"eval.{name} {unknown} unknown; choose from {', '.join(allowed)}")
        if problems:
            raise RunConfigError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict | None, base_dir: Path | None = None) -> RunConfig:
        values = values or {}
        if not isinstance(values, dict):
            raise RunConfigError("a run config is a mapping of sections: " + ", ".join(SECTIONS))
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise RunConfigError(f"unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
        kwargs: dict = {}
        try:
            for name, section in values.items():
                if section is None and name != "dedup":
                    continue
                if name == "curate":
                    kwargs[name] = CurationConfig.from_dict(section, base_dir=base_dir)
                elif name == "dedup":
                    kwargs[name] = None if section is None else DedupConfig.from_dict(section)
                elif name == "train":
                    kwargs[name] = train_from(section)
                elif name == "run" and base_dir is not None and isinstance(section, dict):
                    # Relative source paths in a config file are relative to the file, as curate.optout is.
                    sources = section.get("sources")
                    if isinstance(sources, list):
                        section = {
                            **section,
                            "sources": [
                                s if "://" in str(s) or Path(str(s)).is_absolute() else str(base_dir / str(s))
                                for s in sources
                            ],
                        }
                    kwargs[name] = JobConfig.from_dict(section)
                elif (
                    name == "eval"
                    and base_dir is not None
                    and isinstance(section, dict)
                    and isinstance(section.get("data"), dict)
                ):
                    data = {
                        task: path if Path(str(path)).is_absolute() else str(base_dir / str(path))
                        for task, path in section["data"].items()
                    }
                    kwargs[name] = EvalConfig.from_dict({**section, "data": data})
                else:
                    loaders: dict[str, Callable[[dict], object]] = {
                        "run": JobConfig.from_dict,
                        "tokenizer": TokenizerStageConfig.from_dict,
                        "tokenize": TokenizeConfig.from_dict,
                        "eval": EvalConfig.from_dict,
                        "publish": PublishConfig.from_dict,
                    }
                    kwargs[name] = loaders[name](section)
            return cls(**kwargs)
        except RunConfigError:
            raise
        except (TypeError, ValueError) as err:
            raise RunConfigError(str(err)) from None

    @classmethod
    def from_yaml(cls, path: Path) -> RunConfig:
        import yaml

        from codemill.settings import load_yaml

        path = Path(path)
        try:
            values = load_yaml(path.read_text())
        except OSError as err:
            raise RunConfigError(f"cannot read the run config {path}: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise RunConfigError(f"{path} is not valid YAML: {err}") from None
        try:
            return cls.from_dict(values, base_dir=path.parent)
        except RunConfigError as err:
            raise RunConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict:
        return {name: plain(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def train_from(section: dict) -> TrainConfig:
    """The `train:` section over the run's training defaults (not TrainConfig's bare ones)."""
    base = default_train()
    reject_unknown(TrainConfig, section, "train")
    merged = plain(base)
    for name, value in section.items():
        if name in ("data", "optim") and isinstance(value, dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return TrainConfig.from_dict(merged)
