"""codemill's Beam runner on a real dask.distributed cluster: a scheduler and two worker processes
started by `dask scheduler` / `dask worker`, as a user would start them. Every stage's output is
compared byte for byte with the local runner's, once with a worker killed during the job."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from conftest import free_port

from codemill.pipelines.dask_runner import DaskRunner, UnsupportedTransformError, runner_from_args
from codemill.pipelines.driver import default_pipeline_options

pytest.importorskip("distributed")
DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[str]:
    """Two repositories of real code, copied once: the live folders change under a running suite
    (pytest writes __pycache__ into them), and a changed size plans other shards."""
    import shutil

    root = tmp_path_factory.mktemp("sources")
    here = Path(__file__).resolve()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(here.parents[1] / "src" / "codemill", root / "codemill", ignore=ignore)
    shutil.copytree(here.parent, root / "tests", ignore=ignore)
    return [str(root / "codemill"), str(root / "tests")]


@pytest.fixture(scope="module")
def cluster():
    """`dask scheduler` and `dask worker --nworkers 2` on localhost; yields the scheduler address."""
    with _cluster() as (address, _):
        yield address


def _scheduler_file(port: int | str) -> str:
    import tempfile

    return f"{tempfile.gettempdir()}/codemill-dask-{port}.json"


@contextlib.contextmanager
def _cluster():
    """(address, scheduler process); the scheduler also writes its address to a file, as on Slurm."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # The workers import this module's DoFns, as a user's workers import theirs.
    env = dict(
        os.environ,
        CODEMILL_PROGRESS="0",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    )
    logs = subprocess.DEVNULL
    scheduler = subprocess.Popen(
        [
            DASK,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--scheduler-file",
            _scheduler_file(port),
        ],
        stdout=logs,
        stderr=logs,
        env=env,
        start_new_session=True,
    )
    workers = subprocess.Popen(
        [DASK, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--memory-limit", "4GiB"],
        stdout=logs,
        stderr=logs,
        env=env,
        start_new_session=True,
    )
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, scheduler
    finally:
        for process in (workers, scheduler):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in (workers, scheduler):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


def _digests(out: Path) -> dict[str, str]:
    """Every output file's hash; the output's own path (named in blend.json) left out of it, and
    megatron-core's index cache (written beside the shards by training) left out."""
    return {
        str(p.relative_to(out)): hashlib.sha1(p.read_bytes().replace(str(out).encode(), b"OUT")).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and "_work" not in p.parts
        and "cache" not in p.parts
        and p.name not in ("_SUCCESS.json", "_STAGE.json", "stats.json", "dedup.json", "tokenize.json")
    }


def _codemill(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "codemill.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, CODEMILL_PROGRESS="0"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_short_name_resolves_to_ours():
    runner, rest = runner_from_args(["--runner=DaskRunner", "--dask_client_address", "tcp://h:1", "--x=1"])
    assert isinstance(runner, DaskRunner) and runner.address == "tcp://h:1" and rest == ["--x=1"]
    _, runner = default_pipeline_options(["--runner", "DaskRunner"])
    assert isinstance(runner, DaskRunner)
    assert runner_from_args(["--runner=FlinkRunner"]) == (None, ["--runner=FlinkRunner"])


class _Tagged(beam.DoFn):
    def start_bundle(self):
        self.seen = 0

    def process(self, x):
        beam.metrics.Metrics.counter("t", "in").inc()
        self.seen += 1
        yield beam.pvalue.TaggedOutput("odd", x) if x % 2 else x

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MIN_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        yield WindowedValue(-self.seen, MIN_TIMESTAMP, [GlobalWindow()])  # the main output, at the end


def _count(name: str):
    def inc(_):
        beam.metrics.Metrics.counter("t", name).inc()

    return inc


@pytest.mark.parametrize("shuffle", ["tasks", "p2p"])
def test_beam_semantics_on_the_cluster(cluster, shuffle):
    """Tagged outputs kept apart, finish_bundle outputs kept, side inputs, a lifted combine,
    counters; every branch runs though nothing is read back; both kinds of shuffle. (The
    scheduler found by its file.)"""
    file = _scheduler_file(cluster.rsplit(":", 1)[1])
    runner, _ = runner_from_args(["--runner=DaskRunner", f"--dask_scheduler_file={file}", f"--dask_shuffle={shuffle}"])
    pipeline = beam.Pipeline(runner=runner)
    numbers = pipeline | beam.Create(list(range(200)))
    split = numbers | beam.ParDo(_Tagged()).with_outputs("odd", main="even")
    evens = split.even | "NonNegative" >> beam.Filter(lambda x: x >= 0)
    total = numbers | beam.CombineGlobally(sum)
    checked = evens | "WithTotal" >> beam.Map(lambda x, t: (x, t), beam.pvalue.AsSingleton(total))
    checked | "Check" >> beam.Map(lambda pair: pair[1] == 19900 and beam.metrics.Metrics.counter("t", "ok").inc())
    split.odd | "CountOdd" >> beam.Map(_count("odd"))
    (split.even | "CountEvenAndEnds" >> beam.Map(_count("even_and_ends")))
    grouped = numbers | "Key" >> beam.Map(lambda x: (x % 3, x)) | beam.GroupByKey()
    grouped | "Sizes" >> beam.Map(lambda kv: beam.metrics.Metrics.counter("t", f"group_{kv[0]}").inc(len(kv[1])))
    result = pipeline.run()
    counters = {
        c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter().with_namespace("t"))["counters"]
    }
    partitions = counters["even_and_ends"] - 100
    assert counters["in"] == 200 and counters["odd"] == 100 and counters["ok"] == 100 and partitions >= 2
    assert [counters[f"group_{k}"] for k in range(3)] == [67, 67, 66]


def test_an_unknown_transform_is_refused_before_anything_runs(cluster, tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "a.txt").write_text("line\n")
    pipeline = beam.Pipeline(runner=DaskRunner(cluster))
    pipeline | beam.Create([1]) | beam.Map(lambda _: marker.write_text("x"))
    pipeline | beam.io.ReadFromText(str(tmp_path / "*.txt"))
    with pytest.raises(UnsupportedTransformError, match="ReadFromText"):
        pipeline.run()
    assert not marker.exists()


@pytest.mark.slow
def test_stages_on_the_cluster_write_what_the_local_runner_writes(cluster, sources, tmp_path):
    """curate with near dedup, `codemill dedup` (its shuffles through dask's P2P shuffle),
    tokenizer train and tokenize."""
    dask = ["--runner=DaskRunner", f"--dask_client_address={cluster}"]
    curate = ["curate", *sources, "--no-licenses", "--dedup", "near", "--shard-mb", "0.1"]
    _codemill(*curate, "--out", str(tmp_path / "local"))
    _codemill(*curate, "--out", str(tmp_path / "dask"), *dask)
    assert _digests(tmp_path / "dask") == _digests(tmp_path / "local")

    _codemill("curate", *sources, "--no-licenses", "--shards", "3", "--out", str(tmp_path / "curated"))
    _codemill("dedup", str(tmp_path / "curated"), str(tmp_path / "dedup-local"))
    _codemill("dedup", str(tmp_path / "curated"), str(tmp_path / "dedup-dask"), *dask, "--dask_shuffle=p2p")
    assert _digests(tmp_path / "dedup-dask") == _digests(tmp_path / "dedup-local")

    _codemill("tokenizer", "train", str(tmp_path / "local"), "--out", str(tmp_path / "tok"), "--vocab-size", "600")
    tokenize = [
        "tokenize",
        str(tmp_path / "local"),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--no-decontam",
        "--shards",
        "2",
    ]
    _codemill(*tokenize[:2], str(tmp_path / "tokens-local"), *tokenize[2:])
    _codemill(*tokenize[:2], str(tmp_path / "tokens-dask"), *tokenize[2:], *dask)
    local, remote = _digests(tmp_path / "tokens-local"), _digests(tmp_path / "tokens-dask")
    assert remote == local and any(name.endswith(".bin") for name in local)


def _start_on_cluster(curate: list[str], out: Path, address: str) -> subprocess.Popen:
    """`codemill curate ... --dedup` on the cluster, returned once two units are done (mid-job)."""
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codemill.cli",
            *curate,
            "--out",
            str(out),
            "--runner=DaskRunner",
            f"--dask_client_address={address}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, CODEMILL_PROGRESS="0"),
    )
    deadline = time.monotonic() + 300
    units = out / "_curated" / "_work" / "units"
    while job.poll() is None and time.monotonic() < deadline and len(list(units.glob("*.json"))) < 2:
        time.sleep(0.01)
    assert job.poll() is None, "the job ended before it could be interrupted"
    return job


@pytest.mark.slow
def test_a_worker_killed_during_the_job_changes_nothing(cluster, sources, tmp_path):
    """SIGKILL one worker process while curate + near dedup runs: dask recomputes what it held,
    its nanny starts a new one, and the output is byte-identical."""
    from distributed import Client

    curate = ["curate", *sources, "--no-licenses", "--dedup", "near", "--shard-mb", "0.05"]
    _codemill(*curate, "--out", str(tmp_path / "local"))
    with Client(cluster, timeout=30) as client:
        pids = client.run(os.getpid)
    out = tmp_path / "dask"
    job = _start_on_cluster(curate, out, cluster)
    os.kill(sorted(pids.values())[0], signal.SIGKILL)
    _, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-3000:]
    assert _digests(out) == _digests(tmp_path / "local")
    with Client(cluster, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)  # the nanny replaced it


@pytest.mark.slow
def test_the_data_stages_of_codemill_run_on_the_cluster(cluster, tmp_path):
    """`codemill run` with the runner's options: its curate, tokenizer, tokenize and publish stages
    write what a local run writes (the training stages run in the driver either way)."""
    import yaml
    from test_run import SMALL

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    _codemill("run", "--config", str(config), "--out", str(tmp_path / "local"))
    _codemill(
        "run",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "dask"),
        "--runner=DaskRunner",
        f"--dask_client_address={cluster}",
    )
    for stage in ("curate", "tokenizer", "tokenize", "publish"):
        (local,) = (tmp_path / "local" / "stages").glob(f"{stage}-*")
        (remote,) = (tmp_path / "dask" / "stages").glob(f"{stage}-*")
        assert _digests(remote) == _digests(local), stage


@pytest.mark.slow
def test_a_lost_scheduler_stops_the_job_with_a_message_and_the_rerun_resumes(sources, tmp_path):
    """The scheduler is killed mid-job: the command says so and exits 1, nothing unfinished is
    marked finished, and the same command on a new cluster resumes to the bytes of a local run."""
    curate = ["curate", *sources, "--no-licenses", "--dedup", "near", "--shard-mb", "0.05"]
    _codemill(*curate, "--out", str(tmp_path / "local"))
    out = tmp_path / "dask"
    with _cluster() as (address, scheduler):
        job = _start_on_cluster(curate, out, address)
        os.killpg(scheduler.pid, signal.SIGKILL)
        _, err = job.communicate(timeout=300)
    assert job.returncode == 1 and "lost the dask cluster" in err and "rerun the same command" in err, err[-2000:]
    assert not (out / "_SUCCESS.json").exists()
    with _cluster() as (address, _):
        rerun = _codemill(*curate, "--out", str(out), "--runner=DaskRunner", f"--dask_client_address={address}")
    assert "resuming an unfinished run" in rerun.stderr
    assert _digests(out) == _digests(tmp_path / "local")


def test_a_lost_scheduler_is_a_clear_error():
    pipeline = beam.Pipeline(runner=DaskRunner(f"tcp://127.0.0.1:{free_port()}", timeout=2))
    pipeline | beam.Create([1])
    with pytest.raises(Exception, match="cannot reach the dask scheduler"):
        pipeline.run()
