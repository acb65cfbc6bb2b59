"""The `codemill` command: the parser, assembled from each command module's `register_*`, and
`main`, the one place that turns an error into a message and an exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codemill.cli import curation, evaluation, job, tokens, training
from codemill.cli.common import STORAGE_OPTIONS_HELP, add_output_options, setup_logging, version

DESCRIPTION = """\
codemill turns source-code archives into curated, deduplicated, tokenized training data with
provenance for every token, and trains and evaluates code models on it: each file gets its Software
Heritage ID (SWHID), language, licence, quality-filter verdict and PII redaction, a manifest accounts
for every input file, and every token of the Megatron shards traces back to the SWHID and licence of
the file it came from. `codemill run` does the whole job; the commands below do one stage each.

commands:
  curate     read sources, label and filter every file, write data/, dropped/, manifest/, trees/, stats.json
             (--dedup near|exact also deduplicates inside the same pipeline)
  dedup      exact and near (MinHash-LSH) dedup of a curation output: `codemill dedup IN OUT`
  tokenizer  train a byte-level BPE code tokenizer: `codemill tokenizer train IN --out DIR`
  tokenize   decontaminate, build repository-context FIM documents, write Megatron .bin/.idx shards
  trace      which file a token came from: `codemill trace SHARD_PREFIX TOKEN_INDEX`
  train      train the hybrid attention + Mamba-2 model on the token shards (torchrun for several processes)
  export-hf  write a trained checkpoint as a Hugging Face FalconH1 model (transformers loads it)
  eval       score generations: HumanEval, MBPP (sandboxed pass@k), GSM8K (answers; PAL programs sandboxed)
  eval-signal  likelihood metrics over a run's checkpoints: curves, signal quality (SQ), SNR, a plot
  manifest   verify a curation output against its original sources (`codemill manifest verify DIR`)
  publish    the kept records as a Hugging Face dataset folder with its manifest: `codemill publish IN --out DIR`
  run        the whole job, resumable: curate -> dedup -> tokenize -> train -> eval -> dataset -> report.html
  config     `codemill config show [--config run.yaml]`: the effective run config with every default

Every path may be an fsspec URL (s3://bucket/prefix, gs://..., az://...) except local-only inputs
(directories, git repositories, configs). Endpoints and credentials come from the standard variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, FSSPEC_S3_ENDPOINT_URL, ...) or from
--storage-options JSON, e.g. '{"endpoint_url": "http://127.0.0.1:9000"}' or '{"s3": {"anon": true}}'.

Run `codemill COMMAND --help` for the options of a command.
"""


def _leaf_parsers(commands) -> list[argparse.ArgumentParser]:
    """The parsers of every command and sub-command (`tokenizer train`, `manifest verify`, ...)."""
    leaves: list[argparse.ArgumentParser] = []
    for command in commands.choices.values():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        leaves += _leaf_parsers(nested[0]) if nested else [command]
    return leaves


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.append(sub)
                found.extend(_subparsers(sub))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codemill", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"codemill {version()}")
    add_output_options(parser, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    for register in (
        curation.register_curate,
        curation.register_dedup,
        tokens.register_tokenizer,
        tokens.register_tokenize,
        tokens.register_trace,
        training.register_train,
        training.register_export,
        evaluation.register_eval,
        evaluation.register_signal,
        job.register_run,
        job.register_config,
        curation.register_manifest,
        curation.register_publish,
    ):
        register(commands)

    # Accepted before or after the command; kept in the environment so pipeline workers see it too.
    parser.add_argument("--storage-options", metavar="JSON", help=STORAGE_OPTIONS_HELP)
    for sub in _subparsers(parser):
        sub.add_argument("--storage-options", metavar="JSON", default=argparse.SUPPRESS, help=STORAGE_OPTIONS_HELP)
    for leaf in _leaf_parsers(commands):
        add_output_options(leaf, argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    from codemill.storage import set_storage_options

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    setup_logging(args)
    if args.storage_options is not None:
        try:
            set_storage_options(args.storage_options)
        except ValueError as err:
            parser.error(str(err))
    from codemill.errors import CodemillError

    # The one place an error becomes a message and an exit code (errors.py says what each means).
    try:
        return _dispatch(parser, args, rest)
    except CodemillError as err:  # UserError: exit 2; storage, cluster, a failed run: exit 1
        _report(args, err, str(err))
        return err.exit_code
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        _report(args, err, str(err))  # a path the user gave that cannot be read as one: it is named
        return 2
    except OSError as err:  # a full disk, a read-only output
        where = f" ({err.filename})" if err.filename else ""
        _report(args, err, f"{err.strerror or err}{where}; free space or choose another output, then rerun the command")
        return 1


def _report(args: argparse.Namespace, err: BaseException, message: str) -> None:
    """`codemill <command>: [stage <name>: ]<message>`; the run's executor names the stage."""
    command = getattr(args, "command", None)
    stage = getattr(err, "stage", None)
    prefix = "codemill" + (f" {command}" if command else "") + (f": stage {stage}" if stage else "")
    print(f"{prefix}: {message}", file=sys.stderr)


# Commands whose paths stay on local disk (checkpoints, sandboxes, reports): a URL is refused
# rather than turned by Path() into a local folder named "s3:".
LOCAL_PATHS = {
    "run": ("out",),
    "train": ("out", "config"),
    "export-hf": ("checkpoint", "out"),
    "eval": ("out", "model"),
    "eval-signal": ("run_dir",),
}


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str]) -> int:
    from codemill.storage import is_remote

    for name in LOCAL_PATHS.get(args.command, ()):
        value = getattr(args, name, None)
        if isinstance(value, str) and is_remote(value):
            print(
                f"codemill {args.command}: {value} ({name.replace('_', '-')}) must be on local disk; the data stages "
                "(curate, dedup, tokenizer train, tokenize, publish, manifest verify, trace) and the training "
                "data path take fsspec URLs",
                file=sys.stderr,
            )
            return 2
    out = getattr(args, "out", None) or getattr(args, "output", None)
    if isinstance(out, str) and not is_remote(out) and Path(out).is_file():
        print(f"codemill {args.command}: the output {out} is a file; give a folder", file=sys.stderr)
        return 2
    handler = getattr(args, "handler", None)
    if handler is None:  # no command, or a tool without its action (`codemill manifest`)
        parser.print_help()
        return 0 if args.command is None else 2
    if not args.beam_args:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return handler(args)
    if rest:
        from codemill.pipelines.common import unknown_pipeline_args

        unknown = unknown_pipeline_args(rest)
        if unknown:
            parser.error(
                f"unrecognized arguments for `codemill {args.command}`: {' '.join(unknown)} (neither its own "
                f"options nor a Beam pipeline option; see `codemill {args.command} --help`)"
            )
    return handler(args, rest)
