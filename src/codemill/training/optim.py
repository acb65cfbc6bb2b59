"""Optimisers, parameter groups and learning-rate schedules.

Groups (by parameter name and shape, so any model built from training/model.py sorts itself):
    matrix      2D weights of the hidden linear layers: Muon (torch.optim.Muon) or AdamW
    embedding   token embedding and lm_head: AdamW with weight decay
    vector      norms, biases, conv kernels, A_log / D / dt_bias: AdamW, no weight decay
    multiplier  learnable multipliers: AdamW with a small weight decay, excluded from global
                gradient-norm clipping (arXiv 2601.04890: clipping them with the matrices stalls them)

Muon runs with `adjust_lr_fn="match_rms_adamw"`, so one learning rate serves both optimisers.
With `mup_base_width`, the hidden matrices' learning rate scales by base_width / width (muP for
Adam-type updates), so a rate tuned on a narrow proxy transfers to a wider model.
"""

from __future__ import annotations

import math

import torch

from codemill.errors import UserError
from codemill.training.config import OPTIMIZERS, SCHEDULES, OptimConfig  # noqa: F401 (re-exported)


def lr_factor(config: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total_steps`."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    floor = config.min_lr_ratio
    if config.schedule == "cosine":
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_steps = int(round(config.decay_fraction * total_steps))  # WSD: warmup, stable, linear decay
    decay_start = total_steps - decay_steps
    if decay_steps == 0 or step < decay_start:
        return 1.0
    progress = (step - decay_start + 1) / decay_steps
    return 1.0 - (1.0 - floor) * min(1.0, progress)


def parameter_groups(model: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    groups: dict[str, list] = {"matrix": [], "embedding": [], "vector": [], "multiplier": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("multiplier_"):
            groups["multiplier"].append((name, param))
        elif name.startswith(("embed.", "lm_head.")) or ".embed." in name or ".lm_head." in name:
            groups["embedding"].append((name, param))
        elif param.dim() == 2:
            groups["matrix"].append((name, param))
        else:
            groups["vector"].append((name, param))
    return groups


class Optimizers:
    """One or two torch optimisers behind one interface (step, zero_grad, lr schedule, state)."""

    def __init__(self, model: torch.nn.Module, config: OptimConfig, width: int) -> None:
        self.config = config
        groups = parameter_groups(model)
        matrix_lr = config.lr * (config.mup_base_width / width if config.mup_base_width else 1.0)
        adam_groups = [
            {
                "params": [p for _, p in groups["embedding"]],
                "lr": config.lr,
                "weight_decay": config.weight_decay,
                "name": "embedding",
            },
            {"params": [p for _, p in groups["vector"]], "lr": config.lr, "weight_decay": 0.0, "name": "vector"},
            {
                "params": [p for _, p in groups["multiplier"]],
                "lr": config.multiplier_lr or config.lr,
                "weight_decay": config.multiplier_weight_decay,
                "name": "multiplier",
            },
        ]
        matrix_group = {
            "params": [p for _, p in groups["matrix"]],
            "lr": matrix_lr,
            "weight_decay": config.weight_decay,
            "name": "matrix",
        }
        self.optimizers: list[torch.optim.Optimizer] = []
        if config.optimizer == "muon":
            self.optimizers.append(
                torch.optim.Muon(
                    [matrix_group],
                    lr=matrix_lr,
                    weight_decay=config.weight_decay,
                    momentum=config.muon_momentum,
                    adjust_lr_fn="match_rms_adamw",
                )
            )
        else:
            adam_groups.insert(0, matrix_group)
        adam_groups = [g for g in adam_groups if g["params"]]
        # fused: one kernel over every tensor, not a loop of small ones (a small model's step is mostly those)
        self.optimizers.append(
            torch.optim.AdamW(
                adam_groups,
                lr=config.lr,
                betas=config.betas,
                eps=config.eps,
                weight_decay=config.weight_decay,
                fused=True,
            )
        )
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["base_lr"] = group["lr"]
        self.clipped = [p for name in ("matrix", "embedding", "vector") for _, p in groups[name]]

    def set_step(self, step: int, total_steps: int) -> float:
        """Set every group's learning rate for `step`; returns the schedule factor."""
        factor = lr_factor(self.config, step, total_steps)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
        return factor

    def clip(self) -> float:
        """Clip the global gradient norm (multipliers excluded); returns the norm before clipping."""
        limit = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.clipped, limit, foreach=True)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.optimizers):
            raise UserError(
                f"the checkpoint has {len(states)} optimiser states, this run has {len(self.optimizers)} "
                "(was it written with another --optimizer?)"
            )
        for optimizer, state in zip(self.optimizers, states, strict=False):
            optimizer.load_state_dict(state)
