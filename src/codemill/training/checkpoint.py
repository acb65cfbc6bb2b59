"""Checkpoints: atomic, verified, pruned.

    <run>/checkpoints/step-00000100/
        model.pt     full model state dict (multipliers unfolded: training continues from it)
        optim.pt     full optimiser state (every optimiser of the run)
        rng.pt       Python, numpy and torch RNG states of every rank
        state.json   steps done, samples consumed, skipped steps, the run's configs
        MANIFEST.json  size and sha256 of every file above; written last

A checkpoint is written into a temporary directory and renamed into place, so a crash leaves either
the previous checkpoint or the new one, never half of one. On resume the newest checkpoint whose
manifest checks out is used; a corrupt or partial one is reported (which file, why) and skipped for
the one before it. The last `keep` checkpoints are kept; with `keep_full`, only the newest
`keep_full` of them keep their optimiser and RNG states: the older ones become weights-only (model.pt
and state.json, the manifest rewritten and marked), which evaluation reads and resumption skips.
An optimiser state is twice the model's size, so a run kept whole for eval curves needs a third of
the disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from codemill.errors import CodemillError

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
FILES = ("model.pt", "optim.pt", "rng.pt", "state.json")
WEIGHTS_FILES = ("model.pt", "state.json")


class CheckpointCorrupt(CodemillError, RuntimeError):
    """A checkpoint directory whose files do not match its manifest (names the file and why)."""

    exit_code = 2  # the checkpoint cannot be used: give another, or --fresh


@dataclass
class Checkpoint:
    path: Path
    model: dict
    optim: dict | None  # None: a weights-only checkpoint
    rng: list | None
    state: dict


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_state: dict,
    optim_state: dict,
    rng: list,
    state: dict,
    keep: int = 3,
    keep_full: int | None = None,
) -> Path:
    """Write checkpoint `step` atomically, prune to the last `keep`, and make all but the newest
    `keep_full` weights-only; returns its directory."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        torch.save(model_state, tmp / "model.pt")
        torch.save(optim_state, tmp / "optim.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str))
        manifest = {}
        for name in FILES:
            _fsync(tmp / name)
            manifest[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": manifest}, indent=2))
        _fsync(tmp / MANIFEST)
        if final.exists():  # the same step written again (a resumed run re-reaching it)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    if keep_full is not None and keep_full > 0:
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep_full]:
            _strip_to_weights(old)
    return final


def _strip_to_weights(path: Path) -> None:
    """Drop the optimiser and RNG states of a checkpoint; the manifest (rewritten atomically first)
    marks it weights-only, so a crash half-way leaves a checkpoint that still verifies."""
    manifest_file = path / MANIFEST
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, json.JSONDecodeError):
        return  # corrupt: left for load_latest to report
    if manifest.get("weights_only"):
        return
    manifest["files"] = {name: entry for name, entry in manifest.get("files", {}).items() if name in WEIGHTS_FILES}
    manifest["weights_only"] = True
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, manifest_file)
    for name in set(FILES) - set(WEIGHTS_FILES):
        (path / name).unlink(missing_ok=True)


def verify(path: Path, weights_only_ok: bool = False) -> dict:
    """The manifest of a complete, unaltered checkpoint; CheckpointCorrupt otherwise (also for a
    weights-only checkpoint unless `weights_only_ok`: it cannot resume a run)."""
    manifest_file = path / MANIFEST
    if not manifest_file.exists():
        raise CheckpointCorrupt(f"{path}: no {MANIFEST} (the write did not finish)")
    try:
        manifest = json.loads(manifest_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointCorrupt(f"{manifest_file}: not JSON ({err.msg})") from None
    for name, expected in manifest.get("files", {}).items():
        file = path / name
        if not file.exists():
            raise CheckpointCorrupt(f"{file}: missing")
        if file.stat().st_size != expected["bytes"]:
            raise CheckpointCorrupt(
                f"{file}: {file.stat().st_size} bytes, the manifest says {expected['bytes']} (truncated?)"
            )
        if _sha256(file) != expected["sha256"]:
            raise CheckpointCorrupt(f"{file}: contents differ from the manifest's sha256 (corrupted)")
    expected = WEIGHTS_FILES if manifest.get("weights_only") else FILES
    if set(manifest.get("files", {})) != set(expected):
        raise CheckpointCorrupt(
            f"{manifest_file}: lists {sorted(manifest.get('files', {}))}, expected {list(expected)}"
        )
    if manifest.get("weights_only") and not weights_only_ok:
        raise CheckpointCorrupt(
            f"{path}: weights only (its optimiser state was dropped, keep_optimizer_states): "
            "it can be evaluated, not resumed"
        )
    return manifest


def load_checkpoint(path: Path, weights_only_ok: bool = False) -> Checkpoint:
    """One checkpoint directory, verified against its manifest first."""
    manifest = verify(path, weights_only_ok)
    full = not manifest.get("weights_only")
    return Checkpoint(
        path,
        torch.load(path / "model.pt", map_location="cpu", weights_only=True),
        torch.load(path / "optim.pt", map_location="cpu", weights_only=True) if full else None,
        # our own file, verified against the manifest
        torch.load(path / "rng.pt", map_location="cpu", weights_only=False) if full else None,
        json.loads((path / "state.json").read_text()),
    )


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The newest valid checkpoint of the run (None when it has none); corrupt ones are skipped
    with a warning naming the problem."""
    root = checkpoint_dir(run_dir)
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True) if root.exists() else []
    problems = []
    for path in candidates:
        try:
            return load_checkpoint(path)
        except (CheckpointCorrupt, OSError, RuntimeError, ValueError) as err:
            problems.append(str(err))
            log.warning("checkpoint %s is unusable (%s); trying the one before it", path.name, err)
    if problems:
        raise CheckpointCorrupt(f"no usable checkpoint under {root}: " + "; ".join(problems))
    return None
