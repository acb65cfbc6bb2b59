"""`codemill train` and `export-hf`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from codemill.cli.common import (
    add_config_flags,
    config_changes,
    load_config_section,
)
from codemill.errors import UserError

# The train options that set a TrainConfig / OptimConfig field of the same name.
TRAIN_FLAGS = (
    "model",
    "steps",
    "micro_batch",
    "grad_accum",
    "seed",
    "log_every",
    "checkpoint_every",
    "parallel",
    "precision",
)
OPTIM_FLAGS = ("optimizer", "lr", "schedule")


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from codemill.pipelines.run_config import train_from
    from codemill.training.loop import train

    # The run's training defaults under the file's `train:` section: what `codemill config show` prints.
    section = load_config_section(args.config, "train", None) if args.config else {}
    try:
        config = train_from(section)
    except UserError as err:
        raise UserError(f"config {args.config}: {err}") from None
    changes = config_changes(args, TRAIN_FLAGS)
    if args.out is not None:
        changes["out_dir"] = args.out
    if args.data is not None or args.seq_len is not None:
        data = dataclasses.replace(
            config.data, **{k: v for k, v in (("path", args.data), ("seq_len", args.seq_len)) if v is not None}
        )
        changes["data"] = data
    optim = config_changes(args, OPTIM_FLAGS)
    if args.warmup is not None:
        optim["warmup_steps"] = args.warmup
    if optim:
        changes["optim"] = dataclasses.replace(config.optim, **optim)
    if args.tensorboard:
        changes["tensorboard"] = True
    if args.activation_checkpointing:
        changes["activation_checkpointing"] = True
    config = dataclasses.replace(config, **changes)
    if not config.out_dir:
        raise UserError("no run directory: give --out (or out_dir in the config's train: section)")
    if not config.data.path:
        raise UserError("no training data: give --data (a `codemill tokenize` output) or data.path in --config")
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.losses.get(result.last_step)
        print(
            f"\ntrained to step {result.last_step}"
            + (f" (resumed from {result.resumed_from})" if result.resumed_from else "")
            + (f", last loss {last:.4f}" if last is not None else "")
            + f", {result.skipped_steps} steps skipped\n  checkpoints : {result.out_dir / 'checkpoints'}\n"
            f"  metrics     : {result.out_dir / 'metrics.jsonl'}\n"
            f"  export      : codemill export-hf {result.out_dir} OUT --tokenizer {config.data.path}/tokenizer"
        )
    return 0


def _export_hf(args: argparse.Namespace) -> int:
    from codemill.training.export_hf import export_hf
    from codemill.training.loop import load_model, tokenizer_dir_of

    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    if tokenizer is None:  # the tokenizer the run trained with, when it is still there
        try:
            found = tokenizer_dir_of(Path(args.checkpoint))
            tokenizer = found if (found / "tokenizer.json").exists() else None
        except (FileNotFoundError, KeyError, ValueError):
            tokenizer = None
    out = export_hf(load_model(Path(args.checkpoint)), Path(args.out), tokenizer)
    print(f"wrote a FalconH1 checkpoint to {out} (load it with transformers.AutoModelForCausalLM.from_pretrained)")
    if tokenizer is None:
        print(
            "codemill export-hf: no tokenizer saved (the run's is not found): give --tokenizer "
            "(a `codemill tokenize` output's tokenizer folder) so that AutoTokenizer can load the model",
            file=sys.stderr,
        )
    else:
        print(f"  tokenizer : {tokenizer}")
    return 0


def register_train(commands) -> None:
    from codemill.pipelines.run_config import default_train

    train = commands.add_parser(
        "train",
        help="train the hybrid model on token shards",
        description="Train the Falcon-H1-style hybrid model (attention and Mamba-2 in parallel in every block) on "
        "the shards of `codemill tokenize`. Resumes from the newest valid checkpoint in --out. For "
        "several processes: torchrun --nproc_per_node=N -m codemill.cli train ... (gloo on CPU).",
        epilog="Every setting can also come from --config (YAML, optionally under 'train:'): out_dir, model, "
        "model_overrides (any model field), data {path, seq_len, seed}, optim {optimizer, lr, schedule, "
        "warmup_steps, decay_fraction, weight_decay, multiplier_weight_decay, grad_clip, mup_base_width, ...}, "
        "steps, micro_batch, grad_accum, checkpoint_every, keep_checkpoints, max_bad_steps, parallel, "
        "tensorboard, activation_checkpointing, peak_flops.",
    )
    # The defaults shown are the ones used: the run's `train:` defaults (`codemill config show`).
    t = default_train()
    train.add_argument("--config", help="YAML config: its train: section (or the whole file) over the defaults")
    train.add_argument("--data", help="a `codemill tokenize` output directory (or its blend.json)")
    train.add_argument("--out", help="run directory: checkpoints, metrics.jsonl (required unless out_dir is set)")
    from codemill.training.config import DataConfig, OptimConfig, TrainConfig

    add_config_flags(train, TrainConfig, TRAIN_FLAGS, defaults=t)
    add_config_flags(train, DataConfig, ("seq_len",), defaults=t.data)
    add_config_flags(train, OptimConfig, OPTIM_FLAGS, defaults=t.optim)
    train.add_argument("--warmup", type=int, help=f"steps of linear warmup (default: {t.optim.warmup_steps})")
    train.add_argument("--tensorboard", action="store_true", help="also log to <out>/tensorboard")
    train.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each block's activations in backward: less memory, ~1/3 more compute",
    )
    train.set_defaults(handler=_train, beam_args=False)


def register_export(commands) -> None:
    export = commands.add_parser("export-hf", help="write a checkpoint as a Hugging Face FalconH1 model")
    export.add_argument(
        "checkpoint",
        metavar="RUN_OR_CHECKPOINT",
        help="a run directory (its newest valid checkpoint) or one checkpoint directory",
    )
    export.add_argument("out", metavar="OUT", help="output directory (config.json, model.safetensors, tokenizer)")
    export.add_argument("--tokenizer", help="tokenizer.json or its folder, saved with the model")
    export.set_defaults(handler=_export_hf, beam_args=False)
