"""The command line as a new user meets it: versions, log switches, and user errors that are
messages naming the option or path (exit 2), never tracebacks or silent successes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from codemill.cli import main


def test_version_and_output_switches_before_or_after_the_command(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("codemill ")
    for argv in (["-v", "config", "show"], ["config", "show", "-v"], ["config", "show", "--log-level", "error"]):
        assert main(argv) == 0
    done = subprocess.run(
        [sys.executable, "-m", "codemill", "config", "show", "-q"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize(
    "argv, named",
    [
        (["eval", "--load-generations", "g.json", "--k", "1,a"], "argument --k"),
        (["tokenize", "IN", "OUT", "--tokenizer", "T", "--shards", "0"], "argument --shards"),
        (["curate", "IN", "--out", "OUT", "--shards", "-2"], "argument --shards"),
    ],
)
def test_bad_option_values_name_the_option(tmp_path: Path, argv: list[str], named: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / a) if a in ("IN", "OUT", "T") else a for a in argv])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("command", ["curate", "dedup", "tokenize", "export-hf"])
def test_out_naming_a_file_is_refused(tmp_path: Path, command: str, capsys) -> None:
    existing = tmp_path / "taken.txt"
    existing.write_text("mine\n")
    argv = {
        "curate": ["curate", str(tmp_path), "--out", str(existing)],
        "dedup": ["dedup", str(tmp_path), str(existing)],
        "tokenize": ["tokenize", str(tmp_path), str(existing), "--tokenizer", str(tmp_path)],
        "export-hf": ["export-hf", str(tmp_path), str(existing)],
    }[command]
    assert main(argv) == 2
    assert f"{existing} is a file" in capsys.readouterr().err
    assert existing.read_text() == "mine\n"  # untouched


def test_missing_run_and_empty_inputs_are_errors_not_quiet_successes(tmp_path: Path, capsys) -> None:
    assert main(["eval-signal", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval-signal", str(empty)]) == 2  # a folder, but not a training run
    assert "is not a `codemill train` run directory" in capsys.readouterr().err
    assert main(["curate", str(empty), "--out", str(tmp_path / "cur"), "--no-licenses"]) == 2
    assert "held no files" in capsys.readouterr().err
    assert main(["tokenizer", "train", str(tmp_path / "cur"), "--out", str(tmp_path / "tok")]) == 2
    assert "no kept records" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()


def test_source_mistakes_are_named_before_any_pipeline_runs(tmp_path: Path, git_repo: Path, capsys) -> None:
    assert main(["curate", str(git_repo), "--out", str(tmp_path / "a"), "--ref", "nosuchref"]) == 2
    err = capsys.readouterr().err
    assert "no commit named 'nosuchref'" in err and "Traceback" not in err
    assert main(["curate", str(git_repo), "--out", str(tmp_path / "b"), "--source-kind", "table"]) == 2
    err = capsys.readouterr().err
    assert "needs a file" in err and "Traceback" not in err


def test_a_benchmark_without_its_data_file_is_a_config_error() -> None:
    from codemill.tokenize.config import DecontamConfig

    with pytest.raises(ValueError, match=r"\['mbpp'\] need the path of their JSONL file"):
        DecontamConfig(benchmarks={"humaneval": "", "mbpp": ""})


def test_flags_are_derived_from_the_config_fields(capsys) -> None:
    """A flag that sets a config field takes its type, choices, documentation and default from the
    field (the run's defaults for train), so the help cannot drift from what the command does."""
    from codemill.cli import build_parser
    from codemill.pipelines.run_config import default_train
    from codemill.settings import field_docs
    from codemill.training.config import TrainConfig

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    run = default_train()
    docs = field_docs(TrainConfig)
    assert f"{docs['steps']} (default: {run.steps})" in shown
    assert f"{docs['micro_batch']} (default: {run.micro_batch})" in shown
    assert "--precision {auto,fp32,bf16}" in shown
    args = parser.parse_args(["train", "--precision", "bf16", "--steps", "3", "--lr", "0.01"])
    assert (args.precision, args.steps, args.lr) == ("bf16", 3, 0.01)
    with pytest.raises(SystemExit):
        parser.parse_args(["dedup", "in", "out", "--mode", "fuzzy"])
    assert "invalid choice: 'fuzzy'" in capsys.readouterr().err
