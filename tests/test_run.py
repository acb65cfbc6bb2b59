"""`codemill run`: the config (validation, defaults, sections usable alone), the whole job on a small
real corpus, and resumption after a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from codemill.pipelines.run_config import RunConfig, RunConfigError

# A few minutes of real work shrunk to seconds: 150 files of the embedded corpus, a tiny model.
SMALL = {
    "run": {"max_files": 150, "workers": 2},
    "curate": {"detect_licenses": False, "num_shards": 2},
    "tokenizer": {"vocab_size": 512},
    "tokenize": {"num_shards": 2, "documents": {"max_tokens": 1024}},
    # fp32: the same numbers on every machine (`auto` picks bf16 where the CPU has AMX or AVX512-BF16).
    "train": {
        "model": "tiny",
        "steps": 6,
        "checkpoint_every": 2,
        "log_every": 1,
        "micro_batch": 2,
        "precision": "fp32",
        "data": {"seq_len": 64},
        "optim": {"warmup_steps": 1, "lr": 0.01},
        "peak_flops": 1.0e11,
    },
    "eval": {
        "likelihood_tasks": ["humaneval", "code"],
        "likelihood_limit": 3,
        "max_tokens": 128,
        "pass_tasks": ["humaneval"],
        "pass_limit": 3,
        "max_new_tokens": 8,
        "timeout": 5,
    },
    "publish": {"rows_per_shard": 50},
}


def _write_config(path: Path, values: dict = SMALL) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    "values, message",
    [
        ({"trian": {}}, "unknown section"),
        ({"train": {"stepz": 3}}, "unknown train setting"),
        ({"train": {"steps": "many"}}, "'steps' must be an integer"),
        ({"dedup": {"threshold": "high"}}, "'threshold' must be a number"),
        ({"run": {"sources": "src"}}, "'sources' must be a list"),
        ({"train": {"steps": 15}}, "need at least 2"),
        ({"train": {"keep_checkpoints": 2}}, "keep_checkpoints=2 would delete"),
        ({"train": {"data": {"path": "/x"}}}, "are the run's own"),
        ({"train": {"model_overrides": {"vocab_size": 100}}}, "differs from tokenizer.vocab_size"),
        ({"eval": {"k": [1, 10]}}, "needs n >= 10"),
        ({"eval": {"pass_tasks": ["gsm8k"]}}, "unknown; choose from"),
        ({"curate": {"dedup": {"mode": "exact"}}}, "own `dedup:` section"),
    ],
)
def test_bad_configs_are_refused_with_the_setting_named(values: dict, message: str) -> None:
    with pytest.raises(RunConfigError, match=message):
        RunConfig.from_dict(values)


def test_config_show_prints_every_default_and_round_trips(tmp_path: Path, capsys) -> None:
    from codemill.cli import main

    config = _write_config(tmp_path / "run.yaml", {"train": {"steps": 40, "optim": {"lr": 1e-3}}})
    assert main(["config", "show", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    values = yaml.safe_load(shown)
    assert set(values) == {"run", "curate", "dedup", "tokenizer", "tokenize", "train", "eval", "publish"}
    assert values["train"]["steps"] == 40 and values["train"]["optim"]["lr"] == 1e-3
    assert values["train"]["micro_batch"] == 4  # the run's default, kept beside the override
    assert RunConfig.from_dict(values) == RunConfig.from_yaml(config)
    # Each section serves its own command: the train section through `codemill train --config`.
    from codemill.cli.common import load_config_section
    from codemill.training.loop import TrainConfig

    assert load_config_section(str(tmp_path / "run.yaml"), "train", TrainConfig).steps == 40


def test_train_and_eval_use_the_defaults_config_show_prints(tmp_path: Path, monkeypatch, capsys) -> None:
    """One set of defaults: a command reads its section over the same defaults `config show` prints."""
    from codemill.cli import build_parser, main
    from codemill.cli.evaluation import eval_defaults
    from codemill.settings import plain
    from codemill.training import loop

    config = _write_config(tmp_path / "run.yaml", {"train": {"model": "tiny", "steps": 20}})
    assert main(["config", "show", "--config", str(config)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)

    class Captured(Exception):
        pass

    def capture(train_config):
        raise Captured(train_config)

    monkeypatch.setattr(loop, "train", capture)
    with pytest.raises(Captured) as used:
        main(["train", "--config", str(config), "--data", "tokens", "--out", str(tmp_path / "t")])
    expected = {**shown["train"], "out_dir": str(tmp_path / "t"), "data": {**shown["train"]["data"], "path": "tokens"}}
    assert plain(used.value.args[0]) == expected
    assert main(["train", "--data", "tokens"]) == 2  # no run directory: named, not a default folder
    assert "give --out" in capsys.readouterr().err

    for argv in (["eval"], ["eval", "--config", str(config)]):
        args = build_parser().parse_args(argv)
        eval_defaults(args)
        ev = shown["eval"]
        assert (args.n, args.k, args.max_new_tokens, args.limit) == (
            ev["n"],
            ev["k"],
            ev["max_new_tokens"],
            ev["pass_limit"],
        )


def test_config_show_imports_neither_torch_nor_numba_and_python_m_codemill_runs() -> None:
    """Reading and printing a config is quick: the config modules import no heavy library."""
    code = (
        "import sys, contextlib, io; from codemill.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): assert main(['config', 'show']) == 0\n"
        "print(sorted(m for m in ('torch', 'numba', 'apache_beam') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    module = subprocess.run([sys.executable, "-m", "codemill", "--help"], capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and "usage: codemill" in module.stdout


def _run(config: Path, out: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "codemill.cli", "run", "--config", str(config), "--out", str(out)],
        env=env or dict(os.environ, CODEMILL_PROGRESS="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One uninterrupted run of the small job."""
    base = tmp_path_factory.mktemp("run")
    config = _write_config(base / "run.yaml")
    process = _run(config, base / "out")
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-4000:]
    assert "codemill run finished" in out
    return base / "out"


def test_the_whole_job_writes_dataset_manifest_model_eval_and_report(finished_run: Path) -> None:
    out = finished_run
    run = json.loads((out / "run.json").read_text())["stages"]
    assert set(run) == {"curate", "tokenizer", "tokenize", "train", "export", "eval", "publish", "report"}
    assert all((Path(stage["dir"]) / "_STAGE.json").exists() for stage in run.values())
    # curate and tokenize both write 2 shards: tokenize reads the curation output by repository.
    assert (
        json.loads((Path(run["tokenize"]["dir"]) / "tokenize.json").read_text())["input_read"]
        == "by repository, no shuffle"
    )
    # The dataset folder loads with the datasets library, rows carry SWHIDs, the manifest is beside it.
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_dir=str(out / "dataset" / "data"), split="train")
    assert len(dataset) == run["publish"]["summary"]["rows"] > 0
    assert all(s.startswith("swh:1:cnt:") for s in dataset["swhid"][:20])
    assert list((out / "dataset" / "manifest").glob("part-*.parquet"))
    card = (out / "dataset" / "README.md").read_text()
    assert card.startswith("---\n") and "## Licences" in card and "codemill manifest verify" in card
    # The model export loads with transformers; eval has curves for every checkpoint and pass@k.
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "model").config.model_type == "falcon_h1"
    signal_report = json.loads((out / "eval" / "signal" / "signal.json").read_text())
    assert {"humaneval loglik", "code -bpb"} <= set(signal_report)
    assert all(entry["steps"] == [2, 4, 6] for entry in signal_report.values())
    assert "pass@1" in json.loads((out / "eval" / "passk" / "humaneval" / "metrics.json").read_text())["humaneval"]
    assert "humaneval" in json.loads((out / "eval" / "passk" / "results.json").read_text())["results"]
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 5 and "http://" not in page and "https://" not in page


def test_a_rerun_reuses_every_finished_stage(finished_run: Path) -> None:
    config = finished_run.parent / "run.yaml"
    started = time.monotonic()
    process = _run(config, finished_run)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert err.count("finished earlier, reused") == 8
    assert time.monotonic() - started < 60


def test_a_run_killed_during_training_resumes_to_the_same_results(finished_run: Path, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "run.yaml")
    out = tmp_path / "out"
    # A hard exit right after step 3 (the checkpoint of step 2 is on disk), as a kill -9 would leave it.
    killed = _run(config, out, env=dict(os.environ, CODEMILL_PROGRESS="0", CODEMILL_FAIL_AFTER_STEP="3"))
    _, err = killed.communicate(timeout=900)
    assert killed.returncode == 17, err[-3000:]
    assert list(out.glob("stages/train-*/checkpoints/step-00000002"))
    assert not list(out.glob("stages/train-*/_STAGE.json"))  # the killed stage is not marked finished
    resumed = _run(config, out)
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-4000:]
    assert err.count("finished earlier, reused") == 3  # curate, tokenizer, tokenize
    # Same stage keys (same config and inputs), same results as the uninterrupted run.
    mine = json.loads((out / "run.json").read_text())["stages"]
    theirs = json.loads((finished_run / "run.json").read_text())["stages"]
    assert {n: s["key"] for n, s in mine.items()} == {n: s["key"] for n, s in theirs.items()}
    assert mine["train"]["summary"]["resumed_from"] == 2

    def losses(run: Path) -> dict:
        rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
        return {row["step"]: round(row["loss"], 5) for row in rows}

    assert losses(out) == losses(finished_run)
    for name in ("signal/signal.json", "passk/humaneval/metrics.json"):
        ours, reference = (json.loads((run / "eval" / name).read_text()) for run in (out, finished_run))
        ours.pop("config", None), reference.pop("config", None)
        assert ours == reference, name
    data = sorted((out / "dataset" / "data").iterdir())
    assert [p.read_bytes() for p in data] == [
        p.read_bytes() for p in sorted((finished_run / "dataset" / "data").iterdir())
    ]


def test_an_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "blob.bin").write_bytes(b"\x00\x01binary\x00" * 100)
    config = _write_config(tmp_path / "run.yaml", {**SMALL, "run": {"sources": [str(source)]}})
    process = _run(config, tmp_path / "out")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2
    assert "stage curate" in err and "empty after filtering" in err


def _copy_run(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished_run, out, symlinks=True)
    config = _write_config(tmp_path / "run.yaml")
    for marker in out.glob("stages/publish-*/_STAGE.json"):  # the stage the faults below hit
        marker.unlink()
    return out, config


def test_a_full_disk_names_the_path_and_leaves_the_stage_unfinished(
    finished_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import errno

    import pyarrow.parquet as pq

    from codemill.cli import main

    out, config = _copy_run(finished_run, tmp_path)

    def full(writer, table, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)  # every Parquet write goes through it
    assert main(["run", "--config", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "stage publish: " in err and "No space left on device" in err and "train-00000-of-" in err
    assert not list(out.glob("stages/publish-*/_STAGE.json"))


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(
    finished_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from codemill.cli import main
    from codemill.pipelines import publish

    out, config = _copy_run(finished_run, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "publish_dataset", interrupted)
    assert main(["run", "--config", str(config), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted during stage publish" in err and "Rerun the same command" in err
    assert not list(out.glob("stages/publish-*/_STAGE.json"))


def test_two_runs_cannot_share_an_output_directory(tmp_path: Path) -> None:
    import fcntl

    from codemill.pipelines.run import RunError, run_job

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunError, match="another codemill run is using"):
            run_job(RunConfig.from_dict(SMALL), out)


def test_relative_paths_in_a_config_file_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = _write_config(
        tmp_path / "conf" / "run.yaml",
        {"run": {"sources": ["repos/a.tar.gz", "/abs/b"]}, "eval": {"data": {"mbpp": "data/mbpp.jsonl"}}},
    )
    loaded = RunConfig.from_yaml(config)
    assert loaded.run.sources == (str(tmp_path / "conf" / "repos" / "a.tar.gz"), "/abs/b")
    assert loaded.eval.data == {"mbpp": str(tmp_path / "conf" / "data" / "mbpp.jsonl")}


def test_missing_eval_data_stops_the_run_before_any_stage(tmp_path: Path) -> None:
    from codemill.pipelines.run import RunError, run_job

    config = RunConfig.from_dict(
        {**SMALL, "eval": {**SMALL["eval"], "pass_tasks": ["mbpp"], "data": {"mbpp": str(tmp_path / "missing.jsonl")}}}
    )
    with pytest.raises(RunError, match="eval stage needs mbpp data"):
        run_job(config, tmp_path / "out")
    assert not (tmp_path / "out" / "stages").exists()
