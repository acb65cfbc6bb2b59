"""The training loop: `codemill train`.

One step = `grad_accum` micro-batches of `micro_batch` samples on each of `world` ranks (global
batch = micro_batch x grad_accum x world samples of seq_len tokens); sample numbers follow from the
step alone, so a resumed run reads exactly the samples the uninterrupted run would have. A step
whose loss or gradient norm is not finite is skipped (gradients dropped, logged) and the run aborts
after `max_bad_steps` of them. Metrics go to <out>/metrics.jsonl (and TensorBoard when asked);
checkpoints to <out>/checkpoints every `checkpoint_every` steps and at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codemill.errors import CodemillError, MissingInputError, UserError
from codemill.training.checkpoint import load_latest, save_checkpoint
from codemill.training.config import TrainConfig  # noqa: F401 (re-exported)
from codemill.training.data import PackedSamples
from codemill.training.distributed import (
    DistEnv,
    all_mean,
    apply_activation_checkpointing,
    gather_objects,
    init_distributed,
    no_gradient_sync,
    parallelize,
    shutdown,
)
from codemill.training.memory import check_step_fits
from codemill.training.model import (
    HybridLM,
    ModelConfig,
    flops_per_token,
    masked_cross_entropy,
)
from codemill.training.optim import Optimizers
from codemill.training.precision import resolve_precision

log = logging.getLogger(__name__)


class TrainingAborted(CodemillError, RuntimeError):
    """The run stopped itself (too many non-finite steps); says how many and where."""


@dataclass
class TrainResult:
    out_dir: Path
    losses: dict[int, float]  # step (1-based) -> loss, for the steps this process ran
    last_step: int
    resumed_from: int | None
    skipped_steps: int


def measure_matmul_peak(device: torch.device, seconds: float = 0.5, dtype: torch.dtype | None = None) -> float:
    """FLOP/s of a 2048^2 matmul here in `dtype` (the run's precision): the ceiling MFU is measured against."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    a @ b  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * 2048**3 * count / (time.perf_counter() - start)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Metrics:
    def __init__(self, out_dir: Path, env: DistEnv, tensorboard: bool) -> None:
        self.env = env
        self.file = open(out_dir / "metrics.jsonl", "a") if env.main else None  # noqa: SIM115  lives with the run
        self.board = None
        if tensorboard and env.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "tensorboard logging was asked for but the tensorboard package is not installed "
                    "(pip install tensorboard)"
                ) from None
            self.board = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.board is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.board.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.close()


def _progress(total: int, initial: int, env: DistEnv):
    from codemill.progress import bar

    return bar(total=total, initial=initial, desc="train", unit="step", disable=not env.main)


def train(config: TrainConfig) -> TrainResult:
    env = init_distributed(config.parallel)
    try:
        return _train(config, env)
    finally:
        shutdown(env)


def _train(config: TrainConfig, env: DistEnv) -> TrainResult:
    run = _setup(config, env)
    start_step, skipped, resumed_from = _resume(run)
    if start_step >= config.steps:
        return TrainResult(run.out_dir, {}, start_step, resumed_from, skipped)
    precision = resolve_precision(config.precision, env.device)
    if env.main:
        log.warning("training in %s (%s)", precision.name, precision.reason)
    peak = config.peak_flops or measure_matmul_peak(env.device, dtype=precision.dtype)
    meter = _Meter(run, precision.name, peak, _Metrics(run.out_dir, env, config.tensorboard))
    bar = _progress(config.steps, start_step, env)
    losses: dict[int, float] = {}
    step = start_step
    try:
        for step in range(start_step, config.steps):
            lr_factor = run.optimizers.set_step(step, config.steps)
            loss, grad_norm = _step(run, step, precision.autocast(env.device))
            if math.isfinite(loss) and math.isfinite(grad_norm):
                run.optimizers.step()
            else:
                skipped = _skip(run, meter, step + 1, loss, grad_norm, skipped)
            run.optimizers.zero_grad()
            losses[step + 1] = loss
            meter.after_step(step + 1, loss, grad_norm, lr_factor, skipped, bar)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                _checkpoint(run.out_dir, step + 1, run.model, run.optimizers, env, config, run.model_config, skipped)
            for hook in _STEP_END_HOOKS:
                hook(config, step + 1)
    finally:
        bar.close()
        meter.metrics.close()
    return TrainResult(run.out_dir, losses, step + 1, resumed_from, skipped)


@dataclass
class _Run:
    """What a training run holds between steps."""

    config: TrainConfig
    env: DistEnv
    out_dir: Path
    data: PackedSamples
    model_config: ModelConfig
    model: torch.nn.Module
    optimizers: Optimizers

    @property
    def global_batch(self) -> int:
        return self.config.micro_batch * self.config.grad_accum * self.env.world


def _setup(config: TrainConfig, env: DistEnv) -> _Run:
    """Seeds, data, model (initialised, then wrapped for the process group) and optimisers."""
    out_dir = Path(config.out_dir)
    if env.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    global_batch = config.micro_batch * config.grad_accum * env.world
    data = PackedSamples(config.data, config.steps * global_batch)
    model_config = config.model_config(vocab_size=data.vocab_size)
    if data.vocab_size > model_config.vocab_size:
        raise UserError(
            f"the data's tokenizer has {data.vocab_size} tokens but the model's vocabulary is {model_config.vocab_size}"
        )
    check_step_fits(model_config, config.data.seq_len, config.micro_batch, config.activation_checkpointing, env.device)
    hybrid = HybridLM(model_config).to(env.device)
    hybrid.reset_parameters(seed=config.seed)
    if config.activation_checkpointing:  # before sharding, as torchtitan orders them
        apply_activation_checkpointing(hybrid)
    model = parallelize(
        hybrid, env, config.parallel, bf16=resolve_precision(config.precision, env.device).name == "bf16"
    )
    optimizers = Optimizers(model, config.optim, model_config.hidden_size)
    if env.main:
        (out_dir / "config.json").write_text(
            json.dumps({"train": config.to_dict(), "model": model_config.to_dict()}, indent=2, default=str)
        )
    return _Run(config, env, out_dir, data, model_config, model, optimizers)


def _resume(run: _Run) -> tuple[int, int, int | None]:
    """(first step, steps skipped so far, the step resumed from) after loading the newest full
    checkpoint of the run directory, if there is one."""
    config, env = run.config, run.env
    checkpoint = load_latest(run.out_dir)
    if checkpoint is None:
        return 0, 0, None
    planned = checkpoint.state.get("train", {}).get("steps", config.steps)
    if planned != config.steps:
        raise UserError(
            f"{run.out_dir} was started for {planned} steps: its learning-rate schedule (warmup, decay) and the "
            f"order of its samples are planned for that many. Resume it with --steps {planned}, or start a new "
            f"run in another --out to train for {config.steps} steps"
        )
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # load_latest takes only full checkpoints (weights-only ones are for evaluation).
    assert checkpoint.optim is not None and checkpoint.rng is not None
    set_state_dict(
        run.model,
        run.optimizers.optimizers,
        model_state_dict=checkpoint.model,
        optim_state_dict=checkpoint.optim,
        options=StateDictOptions(full_state_dict=True),
    )
    step = checkpoint.state["step"]
    rng = checkpoint.rng
    _set_rng_state(rng[env.rank] if env.rank < len(rng) else rng[0])
    if env.main:
        log.info("resuming from %s (step %d)", checkpoint.path, step)
    return step, checkpoint.state.get("skipped_steps", 0), step


def _step(run: _Run, step: int, autocast) -> tuple[float, float]:
    """Forward and backward over the step's micro-batches; (mean loss over ranks, gradient norm
    after clipping, NaN when the loss is not finite)."""
    config, env, model = run.config, run.env, run.model
    loss_sum = torch.zeros((), device=env.device)
    for micro in range(config.grad_accum):
        first = step * run.global_batch + (micro * env.world + env.rank) * config.micro_batch
        inputs, targets, mask = (t.to(env.device) for t in run.data.batch(first, config.micro_batch))
        sync = micro == config.grad_accum - 1
        with no_gradient_sync(model) if not sync else contextlib.nullcontext(), autocast:
            # Through the wrapper's __call__, so DDP / FSDP2 hooks run.
            loss = masked_cross_entropy(model(inputs), targets, mask)
            (loss / config.grad_accum).backward()
        loss_sum += loss.detach() / config.grad_accum
    loss_value = float(all_mean(loss_sum, env))
    return loss_value, run.optimizers.clip() if math.isfinite(loss_value) else math.nan


def _skip(run: _Run, meter: _Meter, done: int, loss: float, grad_norm: float, skipped: int) -> int:
    """A step whose loss or gradient is not finite: logged, dropped; the run aborts after too many."""
    skipped += 1
    meter.metrics.write({"step": done, "skipped": True, "loss": loss, "grad_norm": grad_norm, "skipped_total": skipped})
    log.warning("step %d: loss %s, grad norm %s: step skipped (%d so far)", done, loss, grad_norm, skipped)
    if skipped > run.config.max_bad_steps:
        raise TrainingAborted(
            f"{skipped} steps had a non-finite loss or gradient (the last at step {done}), more than "
            f"max_bad_steps={run.config.max_bad_steps}; lower the learning rate or check the data, then resume "
            "from the last checkpoint"
        )
    return skipped


class _Meter:
    """Throughput, MFU and the metric line every `log_every` steps."""

    def __init__(self, run: _Run, precision: str, peak: float, metrics: _Metrics) -> None:
        self.run, self.precision, self.peak, self.metrics = run, precision, peak, metrics
        self.flops_token = flops_per_token(run.model_config, run.config.data.seq_len)
        self.tokens_since, self.time_since = 0, time.perf_counter()

    def after_step(self, done: int, loss: float, grad_norm: float, lr_factor: float, skipped: int, bar) -> None:
        config = self.run.config
        self.tokens_since += self.run.global_batch * config.data.seq_len
        if done % config.log_every == 0 or done == config.steps:
            tokens_per_s = self.tokens_since / (time.perf_counter() - self.time_since)
            self.metrics.write(
                {
                    "step": done,
                    "loss": loss,
                    "lr": config.optim.lr * lr_factor,
                    "grad_norm": grad_norm,
                    "tokens_per_s": tokens_per_s,
                    "mfu": tokens_per_s * self.flops_token / (self.peak * self.run.env.world),
                    "skipped_total": skipped,
                    "precision": self.precision,
                }
            )
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            self.tokens_since, self.time_since = 0, time.perf_counter()
        bar.update(1)


def _crash_after(config: TrainConfig, done: int) -> None:
    """Fault injection for the resume tests (`fail_after_step`): a hard exit, as a crash would be,
    with no cleanup and no final checkpoint."""
    if config.fail_after_step is not None and done == config.fail_after_step:
        os._exit(17)


# Called after every step (its checkpoint written): the place for fault injection and the like.
_STEP_END_HOOKS = (_crash_after,)


def _checkpoint(
    out_dir: Path,
    step: int,
    model,
    optimizers: Optimizers,
    env: DistEnv,
    config: TrainConfig,
    model_config: ModelConfig,
    skipped: int,
) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_state, optim_state = get_state_dict(
        model, optimizers.optimizers, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    rng = gather_objects(_rng_state(), env)
    if env.main:
        state = {
            "step": step,
            "samples": step * config.micro_batch * config.grad_accum * env.world,
            "skipped_steps": skipped,
            "world": env.world,
            "train": config.to_dict(),
            "model": model_config.to_dict(),
            "precision": vars(resolve_precision(config.precision, env.device)),
        }
        save_checkpoint(
            out_dir, step, model_state, optim_state, rng, state, config.keep_checkpoints, config.keep_optimizer_states
        )
    if env.world > 1:
        torch.distributed.barrier()


def load_model(run_or_checkpoint: Path) -> HybridLM:
    """The model of a run directory (its newest valid checkpoint) or of one checkpoint directory."""
    from codemill.training.checkpoint import MANIFEST, load_checkpoint

    path = Path(run_or_checkpoint)
    checkpoint = load_checkpoint(path, weights_only_ok=True) if (path / MANIFEST).exists() else load_latest(path)
    if checkpoint is None:
        raise MissingInputError(f"{path} holds no checkpoint (neither a run directory nor a checkpoint)")
    model = HybridLM(ModelConfig.from_dict(checkpoint.state["model"]))
    model.load_state_dict(checkpoint.model)
    # Evaluation honours the run's precision setting, resolved for this machine (`auto` may give
    # bf16 on one and fp32 on another); a run from before the setting existed trained in fp32.
    setting = checkpoint.state.get("train", {}).get("precision", "fp32")
    model.precision = resolve_precision(setting, torch.device("cpu"))
    return model.eval()


def tokenizer_dir_of(run_or_checkpoint: Path) -> Path:
    """The tokenizer a run trained with: <data path>/tokenizer, from the run's or checkpoint's config."""
    path = Path(run_or_checkpoint)
    for name, key in (("config.json", "train"), ("state.json", "train")):
        if (path / name).exists():
            return Path(json.loads((path / name).read_text())[key]["data"]["path"]) / "tokenizer"
    raise MissingInputError(f"{path} is neither a run directory nor a checkpoint (no config.json / state.json)")
