"""The one Beam driver that curate, dedup and tokenize share: the runner and options from the
command line, how many local processes a stage may use, the check that an input stage finished,
and a timed run. A stage builds its transforms; how a pipeline is run lives here only."""

from __future__ import annotations

import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner

from codemill.errors import MissingInputError
from codemill.storage import StoragePath, location


def default_pipeline_options(args: list[str] | None) -> tuple[PipelineOptions, PipelineRunner | None]:
    """Pipeline options from the CLI and the runner to pass to beam.Pipeline: FnApiRunner when no
    runner is named (Prism cannot run offline), codemill's own for `--runner=DaskRunner`, else None
    (Beam resolves the name)."""
    from codemill.pipelines.dask_runner import runner_from_args

    runner: PipelineRunner | None
    runner, args = runner_from_args(list(args or []))
    options = PipelineOptions(args)
    if runner is None and not any(a == "--runner" or a.startswith("--runner=") for a in args):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
    return options, runner


def is_single_process(options: PipelineOptions, runner) -> bool:
    """The default in-process runner with one worker: the local pool may fan work out."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return isinstance(runner, FnApiRunner) and (options.view_as(DirectOptions).direct_num_workers or 1) <= 1


@dataclass
class BeamDriver:
    """How a stage's pipelines run. `processes` is the local pool's size: what was asked on the
    default in-process runner with one worker, else 1 (a cluster's or Beam's own workers already
    own the cores, and a pool in each would oversubscribe them)."""

    options: PipelineOptions
    runner: PipelineRunner | None
    processes: int

    @classmethod
    def from_args(cls, pipeline_args: list[str] | None, processes: int = 1) -> BeamDriver:
        options, runner = default_pipeline_options(pipeline_args)
        return cls(options, runner, processes if is_single_process(options, runner) else 1)

    @property
    def single_process(self) -> bool:
        return is_single_process(self.options, self.runner)

    def pipeline(self) -> beam.Pipeline:
        return beam.Pipeline(runner=self.runner, options=self.options)

    def run(self, pipeline: beam.Pipeline) -> PipelineResult:
        result = pipeline.run()
        result.wait_until_finish()
        return result

    def timed(self, pipeline: beam.Pipeline) -> float:
        """Run the pipeline to its end; returns its wall-clock seconds."""
        started = time.monotonic()
        self.run(pipeline)
        return time.monotonic() - started


def require_finished(in_dir: StoragePath, what: str, hint: str) -> None:
    """Refuse an input folder without the finished marker of the stage that writes it."""
    from codemill.pipelines.outputs import SUCCESS_MARKER

    if not (location(in_dir) / SUCCESS_MARKER).exists():
        raise MissingInputError(f"{in_dir} is not a finished {what} output (no {SUCCESS_MARKER}); {hint}")
