"""The trainer: a falling loss, exact resume after a crash, corrupt checkpoints, non-finite steps,
optimiser groups and schedules, and 2-process DDP / FSDP2 against one process."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from token_data import make_token_dataset

from codemill.training.checkpoint import CheckpointCorrupt, load_checkpoint, load_latest
from codemill.training.data import DataConfig, DataError, PackedSamples
from codemill.training.loop import TrainConfig, TrainingAborted, train
from codemill.training.model import HybridLM, named_config
from codemill.training.optim import OptimConfig, Optimizers, lr_factor, parameter_groups

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def token_data(tmp_path_factory) -> Path:
    return make_token_dataset(tmp_path_factory.mktemp("tokens"))


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    # fp32 unless a test says otherwise: exact comparisons, the same on every machine.
    base = dict(
        out_dir=str(out),
        model="tiny",
        data=DataConfig(path=str(data), seq_len=64),
        steps=20,
        micro_batch=4,
        log_every=1,
        checkpoint_every=5,
        optim=OptimConfig(warmup_steps=3, lr=3e-3),
        peak_flops=1e11,
        precision="fp32",
    )
    base.update(changes)
    return TrainConfig(**base)


def _run_subprocess(config: TrainConfig, expect_exit: int = 0, device: str | None = None) -> None:
    """A run in a fresh process, as `codemill train` would be (a crash there kills only it)."""
    code = (
        "import json, sys; from codemill.training.loop import TrainConfig, train; "
        "train(TrainConfig.from_dict(json.loads(sys.argv[1])))"
    )
    values = config.to_dict()
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(values)],
        capture_output=True,
        text=True,
        env=dict(os.environ, CODEMILL_PROGRESS="0", CODEMILL_DEVICE=device or os.environ["CODEMILL_DEVICE"]),
        timeout=600,
    )
    assert result.returncode == expect_exit, result.stderr[-3000:]


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


def test_training_lowers_the_loss_and_logs_what_it_did(token_data: Path, tmp_path: Path) -> None:
    result = train(
        _config(
            token_data,
            tmp_path / "run",
            steps=30,
            micro_batch=8,
            log_every=5,
            checkpoint_every=10,
            optim=OptimConfig(optimizer="muon", warmup_steps=3, lr=0.01),
        )
    )
    losses = list(result.losses.values())
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["grad_norm"] > 0 and r["lr"] > 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000010",
        "step-00000020",
        "step-00000030",
    ]


def test_resume_after_a_crash_gives_the_same_losses(token_data: Path, tmp_path: Path) -> None:
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    _run_subprocess(_config(token_data, straight))
    _run_subprocess(_config(token_data, crashed, fail_after_step=12), expect_exit=17)  # killed after step 12
    assert sorted(p.name for p in (crashed / "checkpoints").iterdir()) == ["step-00000005", "step-00000010"]
    _run_subprocess(_config(token_data, crashed))  # resumes from step 10, redoes 11 and 12
    expected, got = _losses(straight), _losses(crashed)
    assert len(expected) == 20
    for step in range(1, 21):
        assert got[step] == expected[step], (step, got[step], expected[step])

    # A corrupt newest checkpoint is reported and the one before it is used, with the same result.
    again = tmp_path / "again"
    shutil.copytree(crashed, again)
    shutil.rmtree(again / "checkpoints" / "step-00000020")
    (again / "metrics.jsonl").unlink()
    model_file = again / "checkpoints" / "step-00000015" / "model.pt"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    assert load_latest(again).path.name == "step-00000010"
    _run_subprocess(_config(token_data, again))
    got = _losses(again)
    assert [got[s] for s in range(11, 21)] == [expected[s] for s in range(11, 21)]


def test_a_run_whose_checkpoints_are_all_corrupt_says_so(token_data: Path, tmp_path: Path) -> None:
    train(_config(token_data, tmp_path / "run", steps=5))
    (tmp_path / "run" / "checkpoints" / "step-00000005" / "optim.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointCorrupt, match="optim.pt: .* bytes, the manifest says"):
        train(_config(token_data, tmp_path / "run", steps=10))


def test_non_finite_steps_are_skipped_then_abort(token_data: Path, tmp_path: Path, monkeypatch) -> None:
    import codemill.training.loop as loop

    calls = {"n": 0}
    real = loop.masked_cross_entropy

    def sometimes_nan(logits, targets, mask=None):
        calls["n"] += 1
        loss = real(logits, targets, mask)
        return loss * float("nan") if calls["n"] in (3, 7) else loss

    monkeypatch.setattr(loop, "masked_cross_entropy", sometimes_nan)
    result = train(_config(token_data, tmp_path / "run", steps=10, max_bad_steps=2))
    assert result.skipped_steps == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("skipped")] == [3, 7]
    calls["n"] = 0
    with pytest.raises(TrainingAborted, match="more than max_bad_steps=1"):
        train(_config(token_data, tmp_path / "run2", steps=10, max_bad_steps=1))


def test_bad_training_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no blend.json"):
        PackedSamples(DataConfig(path=str(tmp_path)), 10)
    (tmp_path / "blend.json").write_text(json.dumps({"prefixes": [str(tmp_path / "gone")], "weights": [1.0]}))
    with pytest.raises(DataError, match="have no .bin/.idx"):
        PackedSamples(DataConfig(path=str(tmp_path)), 10)


def test_schedules_groups_and_clipping() -> None:
    wsd = OptimConfig(schedule="wsd", warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.1)
    factors = [lr_factor(wsd, s, 100) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[79] == 1.0
    assert factors[80] < 1.0 and factors[99] == pytest.approx(0.1)
    cosine = OptimConfig(schedule="cosine", warmup_steps=0, min_lr_ratio=0.0)
    assert lr_factor(cosine, 0, 100) == 1.0 and lr_factor(cosine, 50, 100) == pytest.approx(0.5)
    model = HybridLM(named_config("tiny", vocab_size=64, learnable_multipliers=("scalar", "row")))
    groups = parameter_groups(model)
    assert {n for n, _ in groups["embedding"]} == {"embed.weight", "lm_head.weight"}
    assert all(".multiplier_" in n for n, _ in groups["multiplier"]) and groups["multiplier"]
    assert "layers.0.mamba.A_log" in {n for n, _ in groups["vector"]}
    assert all(p.dim() == 2 for _, p in groups["matrix"])
    optimizers = Optimizers(model, OptimConfig(optimizer="muon", grad_clip=1e-6), 128)
    tokens = torch.randint(0, 64, (2, 16))
    model.loss(tokens, tokens).backward()
    multiplier_grads = [p.grad.clone() for _, p in groups["multiplier"]]
    optimizers.clip()
    assert all(
        torch.equal(p.grad, g) for (_, p), g in zip(groups["multiplier"], multiplier_grads, strict=True)
    )  # not clipped
    assert all(p.grad.norm() < 1e-5 for _, p in groups["matrix"])  # clipped to the tiny limit
    optimizers.step()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(token_data: Path, tmp_path: Path, parallel: str) -> None:
    single = tmp_path / "single"
    _run_subprocess(_config(token_data, single, steps=6, micro_batch=4, checkpoint_every=6), device="cpu")
    config = _config(token_data, tmp_path / "pair", steps=6, micro_batch=2, checkpoint_every=6, parallel=parallel)
    code = (
        "import json, sys; from codemill.training.loop import TrainConfig, train; "
        "train(TrainConfig.from_dict(json.loads(sys.argv[1])))"
    )
    script = tmp_path / "run_train.py"
    script.write_text(code.replace("; ", "\n"))
    with socket.socket() as probe:  # torchrun's --master_port=0 does not pick a port for both ranks
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={port}",
            str(script),
            json.dumps(config.to_dict()),
        ],
        capture_output=True,
        text=True,
        # On CPU (gloo) on any machine: two ranks cannot share one GPU under NCCL.
        env=dict(os.environ, CODEMILL_PROGRESS="0", OMP_NUM_THREADS="1", CODEMILL_DEVICE="cpu"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _losses(single), _losses(tmp_path / "pair")
    assert len(two) == 6
    for step in range(1, 7):
        assert two[step] == pytest.approx(one[step], abs=2e-4), (step, two[step], one[step])


def test_gradient_accumulation_matches_one_big_micro_batch(token_data: Path, tmp_path: Path) -> None:
    one = train(_config(token_data, tmp_path / "one", steps=4, micro_batch=4, checkpoint_every=4))
    accumulated = train(
        _config(
            token_data, tmp_path / "acc", steps=4, micro_batch=2, grad_accum=2, checkpoint_every=4, keep_checkpoints=1
        )
    )
    for step in range(1, 5):
        assert accumulated.losses[step] == pytest.approx(one.losses[step], abs=1e-5)
    assert [p.name for p in (tmp_path / "acc" / "checkpoints").iterdir()] == ["step-00000004"]


def test_cli_trains_exports_and_transformers_loads_it(token_data: Path, tmp_path: Path, capsys) -> None:
    from transformers import FalconH1ForCausalLM

    from codemill.cli import main
    from codemill.training.loop import load_model

    run, hf = tmp_path / "run", tmp_path / "hf"
    assert (
        main(
            [
                "train",
                "--data",
                str(token_data),
                "--model",
                "tiny",
                "--steps",
                "3",
                "--seq-len",
                "32",
                "--micro-batch",
                "2",
                "--out",
                str(run),
                "--optimizer",
                "muon",
            ]
        )
        == 0
    )
    assert main(["export-hf", str(run), str(hf), "--tokenizer", str(token_data / "tokenizer")]) == 0
    ours = load_model(run)
    theirs = FalconH1ForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    tokens = torch.randint(0, 512, (1, 20))
    with torch.no_grad():
        assert (ours(tokens) - theirs(tokens).logits).abs().max() < 1e-4
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(hf).eos_token == "<|endoftext|>"
    assert main(["train", "--model", "tiny", "--out", str(tmp_path / "x")]) == 2  # no data: a clear error
    # A step that cannot fit is named before anything is allocated (the OOM killer would give no message).
    assert main(["train", "--data", str(token_data), "--out", str(tmp_path / "long"), "--seq-len", "100000"]) == 2
    assert "--seq-len" in capsys.readouterr().err and not (tmp_path / "long" / "checkpoints").exists()
    assert main(["export-hf", str(tmp_path / "nothing"), str(tmp_path / "y")]) == 2
    # Without --tokenizer the run's own (its data's tokenizer folder) goes with the model.
    assert main(["export-hf", str(run), str(tmp_path / "auto")]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "auto").eos_token == "<|endoftext|>"


def test_eval_signal_over_the_checkpoints_of_a_run(token_data: Path, tmp_path: Path) -> None:
    from codemill.cli import main

    run = tmp_path / "run"
    train(
        _config(
            token_data,
            run,
            steps=6,
            checkpoint_every=2,
            keep_checkpoints=10,
            optim=OptimConfig(warmup_steps=1, lr=0.01),
        )
    )
    assert (
        main(
            [
                "eval-signal",
                str(run),
                "--tasks",
                "humaneval,code",
                "--limit",
                "4",
                "--pass-limit",
                "3",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    report = json.loads((run / "signal" / "signal.json").read_text())
    assert set(report) == {"humaneval loglik", "humaneval -bpb", "code loglik", "code -bpb", "humaneval pass@1"}
    assert report["humaneval pass@1"]["scores"] == [0.0, 0.0, 0.0]  # flat: 8 tokens of a 6-step model
    assert report["humaneval pass@1"]["sq"] == 0.0 and report["humaneval pass@1"]["snr"] == 0.0
    for entry in report.values():
        assert entry["steps"] == [2, 4, 6] and 0 <= entry["sq"] <= 1
    assert report["code -bpb"]["scores"][-1] > report["code -bpb"]["scores"][0]  # it learned something
    assert (run / "signal" / "curves.png").stat().st_size > 1000


def test_eval_generates_with_our_model_and_with_its_transformers_export(token_data: Path, tmp_path: Path) -> None:
    """The same weights generate the same greedy completions through our cached decoding and
    through transformers' generate, and both are scored in the sandbox."""
    from codemill.cli import main

    run, hf = tmp_path / "run", tmp_path / "hf"
    train(_config(token_data, run, steps=4, checkpoint_every=4))
    assert main(["export-hf", str(run), str(hf), "--tokenizer", str(token_data / "tokenizer")]) == 0
    for name, model in (("ours", run), ("theirs", hf)):
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(model),
                    "--tasks",
                    "humaneval",
                    "--limit",
                    "3",
                    "--n",
                    "2",
                    "--max-new-tokens",
                    "12",
                    "--k",
                    "1,2",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    ours = json.loads((tmp_path / "ours" / "humaneval" / "generations_raw.json").read_text())
    theirs = json.loads((tmp_path / "theirs" / "humaneval" / "generations_raw.json").read_text())
    assert len(ours) == 3 and all(len(g) == 2 for g in ours)
    assert ours == theirs
    metrics = json.loads((tmp_path / "ours" / "humaneval" / "metrics.json").read_text())["humaneval"]
    assert metrics["pass@1"] == 0.0 and metrics["problems"] == 3

    # GSM8K: 8-shot prompts (chain of thought and PAL) generated and scored end to end.
    questions = tmp_path / "gsm8k.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps({"question": q, "answer": f"so it is {a}\n#### {a}"})
            for q, a in (
                ("Tom has 3 apples and buys 4 more. How many now?", 7),
                ("A box holds 6 eggs. How many eggs in 5 boxes?", 30),
            )
        )
    )
    assert (
        main(
            [
                "eval",
                "--model",
                str(run),
                "--tasks",
                "gsm8k,gsm8k-pal",
                "--data",
                f"gsm8k={questions}",
                "--max-new-tokens",
                "8",
                "--out",
                str(tmp_path / "math"),
            ]
        )
        == 0
    )
    for task, marker in (("gsm8k", "\nA:"), ("gsm8k-pal", "# solution in Python:\n\n\n")):
        raw = json.loads((tmp_path / "math" / task / "generations_raw.json").read_text())
        assert len(raw) == 2 and raw[0][0].startswith("Q: Olivia has $23.") and raw[0][0].count(marker) == 9
        metrics = json.loads((tmp_path / "math" / task / "metrics.json").read_text())[task]
        assert metrics["problems"] == 2 and 0.0 <= metrics["accuracy"] <= 1.0


def test_activation_checkpointing_gives_the_same_losses(token_data: Path, tmp_path: Path) -> None:
    plain = train(_config(token_data, tmp_path / "plain", steps=4, checkpoint_every=4))
    recomputed = train(_config(token_data, tmp_path / "ac", steps=4, checkpoint_every=4, activation_checkpointing=True))
    assert recomputed.losses == pytest.approx(plain.losses, rel=1e-5)
    plain_state = load_latest(tmp_path / "plain").model
    assert set(load_latest(tmp_path / "ac").model) == set(plain_state)  # checkpoints keep the same names


def test_older_checkpoints_can_keep_weights_only(token_data: Path, tmp_path: Path) -> None:
    from codemill.training.checkpoint import checkpoint_dir, load_checkpoint
    from codemill.training.loop import load_model

    run = tmp_path / "run"
    train(_config(token_data, run, steps=8, checkpoint_every=2, keep_checkpoints=10, keep_optimizer_states=1))
    checkpoints = sorted(checkpoint_dir(run).glob("step-*"))
    assert [p.name for p in checkpoints] == ["step-00000002", "step-00000004", "step-00000006", "step-00000008"]
    assert [(p / "optim.pt").exists() for p in checkpoints] == [False, False, False, True]
    assert load_model(checkpoints[0]) is not None  # evaluation reads a weights-only checkpoint
    with pytest.raises(CheckpointCorrupt, match="weights only"):
        load_checkpoint(checkpoints[0])  # but it cannot resume a run
    # A rerun resumes from the newest (full) one: the run is complete, nothing is redone.
    result = train(_config(token_data, run, steps=8, checkpoint_every=2, keep_checkpoints=10, keep_optimizer_states=1))
    assert result.resumed_from == 8 and result.last_step == 8


def test_precision_is_resolved_from_the_hardware_and_said(monkeypatch) -> None:
    from codemill.training import precision as module

    monkeypatch.setattr(module, "cpu_bf16_flags", lambda: ("amx_bf16",))
    chosen = module.resolve_precision("auto", torch.device("cpu"))
    assert chosen.name == "bf16" and "amx_bf16" in chosen.reason and chosen.dtype == torch.bfloat16
    monkeypatch.setattr(module, "cpu_bf16_flags", lambda: ())
    assert module.resolve_precision("auto", torch.device("cpu")).name == "fp32"
    assert module.resolve_precision("auto", torch.device("cuda")).name == "bf16"
    assert module.resolve_precision("bf16", torch.device("cpu")).reason == "as configured"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_the_scan_stays_float32_under_bf16_autocast() -> None:
    """Inside bf16 autocast the SSD scan computes as it does outside it (the same float32
    numbers), and its final state, the decoding state, is float32."""
    from codemill.training.kernels import ssd_chunked_ref

    g = torch.Generator().manual_seed(0)
    batch, length, heads, head_dim, groups, state = 2, 64, 4, 8, 2, 16
    x = torch.randn(batch, length, heads, head_dim, generator=g) * 4
    dt = torch.rand(batch, length, heads, generator=g) * 0.1
    A = -torch.rand(heads, generator=g) * 4
    B, C = (torch.randn(batch, length, groups, state, generator=g) for _ in range(2))
    plain = ssd_chunked_ref(x, dt, A, B, C, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = ssd_chunked_ref(x, dt, A, B, C, 16)
    assert autocast[1].dtype == torch.float32
    assert torch.equal(autocast[0], plain[0]) and torch.equal(autocast[1], plain[1])


def test_bf16_training_keeps_float32_master_weights_and_records_it(token_data: Path, tmp_path: Path) -> None:
    result = train(_config(token_data, tmp_path / "run", steps=10, precision="bf16"))
    losses = list(result.losses.values())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000010")
    assert checkpoint.state["precision"] == {"name": "bf16", "reason": "as configured"}
    assert all(value.dtype == torch.float32 for value in checkpoint.model.values() if value.is_floating_point())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {row["precision"] for row in rows} == {"bf16"}
    # Evaluation and decoding run the model as it trained: bf16 autocast, logits back in float32.
    from codemill.eval.generate import SamplingConfig, codec_for, generate_ours
    from codemill.eval.likelihood import logits_fn
    from codemill.tokenize.tokenizer import load_tokenizer
    from codemill.training.loop import load_model, tokenizer_dir_of

    model = load_model(tmp_path / "run")
    assert model.precision.name == "bf16"
    logits = logits_fn(model)(torch.tensor([[1, 2, 3, 4]]))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    codec = codec_for(load_tokenizer(tokenizer_dir_of(tmp_path / "run")))
    config = SamplingConfig(n=1, temperature=0, max_new_tokens=8)
    first = generate_ours(model, codec, ["def add(a, b):"], [], config)
    assert first == generate_ours(model, codec, ["def add(a, b):"], [], config) and first[0][0]


def test_fsdp_alone_runs_and_matches_a_plain_run(token_data: Path, tmp_path: Path) -> None:
    """FSDP2 on one process (a one-rank group) gives a plain run's losses; with bf16 it gathers
    bf16 parameters, reduces in float32, and its checkpoints hold float32 master weights."""
    plain = train(_config(token_data, tmp_path / "plain", steps=5))
    sharded = train(_config(token_data, tmp_path / "fsdp", steps=5, parallel="fsdp"))
    for step, loss in plain.losses.items():
        assert sharded.losses[step] == pytest.approx(loss, rel=1e-5), step
    mixed = train(_config(token_data, tmp_path / "fsdp-bf16", steps=5, parallel="fsdp", precision="bf16"))
    assert all(math.isfinite(v) for v in mixed.losses.values())
    assert mixed.losses[1] == pytest.approx(plain.losses[1], rel=0.05)
    checkpoint = load_checkpoint(tmp_path / "fsdp-bf16" / "checkpoints" / "step-00000005")
    assert all(value.dtype == torch.float32 for value in checkpoint.model.values() if value.is_floating_point())


def test_a_resume_with_another_step_count_is_refused(token_data: Path, tmp_path: Path) -> None:
    """The schedule and the sample order are planned for the run's steps: resuming with other
    steps would silently restart the learning-rate schedule, so it is refused with what to do."""
    train(_config(token_data, tmp_path / "run", steps=4, checkpoint_every=2))
    with pytest.raises(ValueError, match="started for 4 steps.*--steps 4"):
        train(_config(token_data, tmp_path / "run", steps=6, checkpoint_every=2))
    assert train(_config(token_data, tmp_path / "run", steps=4, checkpoint_every=2)).last_step == 4


def test_samples_carry_no_attention_mask(token_data: Path) -> None:
    samples = PackedSamples(DataConfig(path=str(token_data), seq_len=32), 4)
    assert "attention_mask" not in samples.dataset[0]


def test_the_step_memory_bound_refuses_only_what_cannot_fit(monkeypatch) -> None:
    from codemill.errors import UserError
    from codemill.training import memory
    from codemill.training.model_config import named_config

    monkeypatch.setattr(memory, "available_bytes", lambda device: 24 << 30)
    tiny, cpu = named_config("tiny"), torch.device("cpu")
    memory.check_step_fits(tiny, 512, 8, False, cpu)  # the usual shapes pass
    memory.check_step_fits(named_config("small"), 2048, 8, False, cpu)
    with pytest.raises(UserError, match="--seq-len or --micro-batch"):
        memory.check_step_fits(tiny, 100_000, 8, False, cpu)
    # The logits alone: 2 x tokens x vocab floats, a bound below what a step really holds.
    assert memory.step_activation_bytes(tiny, 100_000, 8, True) > 4 * 2 * 800_000 * tiny.vocab_size
