"""`codemill tokenizer train`, `tokenize` and `trace`: from kept records to token shards."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from codemill.cli.common import (
    add_config_flags,
    config_changes,
    load_config_section,
    positive_int,
)
from codemill.pipelines.reports import TokenizeReport

# The tokenize options that set a TokenizeConfig / DocumentConfig field of the same name.
TOKENIZE_FLAGS = ("train_tokens", "dtype")
DOCUMENT_FLAGS = ("max_tokens", "seed", "fim_rate", "fim_spm_rate", "metadata_rate")


def _tokenizer_train(args: argparse.Namespace) -> int:
    from codemill.pipelines.run_config import TokenizerStageConfig
    from codemill.storage import is_remote
    from codemill.tokenize.tokenizer import TokenizerConfig, train_tokenizer_on

    section = load_config_section(args.config, "tokenizer", TokenizerStageConfig)
    section = dataclasses.replace(section, **config_changes(args, ("vocab_size", "min_frequency", "max_files")))
    vocab_size = section.vocab_size
    config = TokenizerConfig(vocab_size=vocab_size, min_frequency=section.min_frequency)
    path = train_tokenizer_on(args.input, args.out, config, section.max_files)
    folder = "<a local copy of the folder>" if is_remote(args.out) else args.out
    print(
        f"tokenizer ({vocab_size} tokens, StarCoder2 special tokens) -> {path}; load it with "
        f"transformers.AutoTokenizer.from_pretrained({folder!r})"
    )
    return 0


def _tokenize(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses

    from codemill.pipelines.tokenize import run_tokenize
    from codemill.tokenize.config import DecontamConfig, TokenizeConfig

    config = load_config_section(args.config, "tokenize", TokenizeConfig)
    changes: dict = {}
    if args.shards is not None:
        changes["num_shards"] = args.shards
    if args.no_decontam:
        changes["decontam"] = None
    elif args.benchmark:
        benchmarks = dict(item.split("=", 1) if "=" in item else (item, "") for item in args.benchmark)
        changes["decontam"] = dataclasses.replace(config.decontam or DecontamConfig(), benchmarks=benchmarks)
    if args.mixture:
        from codemill.tokenize.mixture import MixtureSpec

        changes["mixture"] = MixtureSpec.from_yaml(Path(args.mixture))
    changes.update(config_changes(args, TOKENIZE_FLAGS))
    documents = config_changes(args, DOCUMENT_FLAGS)
    if documents:
        changes["documents"] = dataclasses.replace(config.documents, **documents)
    config = dataclasses.replace(config, **changes)
    result = run_tokenize(args.input, args.output, args.tokenizer, config, beam_args, processes=args.workers)
    report = TokenizeReport.from_json(result.report)
    totals = report.totals
    print(
        f"tokenized {totals.files_in} files into {totals.documents} documents, "
        f"{totals.tokens:,} tokens ({report.dtype}) in {result.seconds:.1f} s; "
        f"{totals.contaminated_files} contaminated files removed {report.contaminated_by_benchmark}\n"
        f"  tokens per component: {report.tokens_by_component}\n"
        f"  shards: {result.out_dir / 'tokens'}\n"
        f"  blend:  {result.out_dir / 'blend.json'} (Megatron-LM --data-path and megatron-core prefixes/weights)\n"
        f"  trace a token: codemill trace {result.out_dir / 'tokens' / next(iter(report.shards))} 0"
    )
    return 0


def _trace(args: argparse.Namespace) -> int:
    from codemill.tokenize.indexed import trace

    hit = trace(args.prefix, args.token_index)
    if hit.file is None:
        print(
            f"token {hit.token_index}: a structure token (repository header, file separator or end of "
            f"document) of document {hit.document}, repository {hit.repo}"
        )
        return 0
    f = hit.file
    where = (
        "content" if hit.in_content else "file separator" if hit.token_index == f["token_start"] else "path (metadata)"
    )
    print(
        f"token {hit.token_index}: document {hit.document}, {where} of\n"
        f"  swhid      {f['qualified_swhid'] or f['swhid']}\n  repository {f['repo']}\n  path       {f['path']}\n"
        f"  licence    {f['license_spdx'] or 'none found'} ({f['license_type']})\n"
        f"  characters {f['char_start']}..{f['char_end']} of the file{', FIM ' + f['fim'] if f['fim'] else ''}"
    )
    return 0


def register_tokenizer(commands) -> None:
    tokenizer = commands.add_parser("tokenizer", help="code tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    train = tokenizer_commands.add_parser("train", help="train a byte-level BPE on the kept records of IN")
    train.add_argument("input", metavar="IN", help="a curation or dedup output directory")
    train.add_argument("--out", required=True, help="tokenizer folder (tokenizer.json + transformers config)")
    train.add_argument(
        "--config",
        help="YAML file with tokenizer settings (vocab_size, min_frequency, max_files), optionally under 'tokenizer:'",
    )
    from codemill.pipelines.run_config import TokenizerStageConfig

    add_config_flags(train, TokenizerStageConfig, ("vocab_size", "min_frequency", "max_files"))
    train.set_defaults(handler=_tokenizer_train, beam_args=False)


def register_tokenize(commands) -> None:
    tokenize = commands.add_parser(
        "tokenize",
        help="decontaminate and tokenize into Megatron .bin/.idx shards with a trace index",
        description="Decontaminate (HumanEval built in; MBPP, GSM8K or any JSONL with --benchmark), build "
        "StarCoder2 repository-context documents with FIM, and write Megatron indexed datasets "
        "(.bin/.idx) plus a trace index per shard.",
    )
    tokenize.add_argument("input", metavar="IN", help="a curation or dedup output directory")
    tokenize.add_argument("output", metavar="OUT", help="output directory")
    tokenize.add_argument("--tokenizer", required=True, help="tokenizer.json or a folder holding it")
    tokenize.add_argument("--config", help="YAML file with tokenize settings, optionally under 'tokenize:'")
    tokenize.add_argument(
        "--benchmark",
        action="append",
        metavar="NAME[=PATH]",
        help="decontaminate against NAME (humaneval needs no path; mbpp=PATH, gsm8k=PATH); repeat",
    )
    tokenize.add_argument("--no-decontam", action="store_true", help="skip decontamination")
    tokenize.add_argument(
        "--mixture",
        help="mixture spec YAML (components selected by record fields, weights, "
        "max_epochs; default: one component 'all')",
    )
    from codemill.tokenize.config import TokenizeConfig
    from codemill.tokenize.documents import DocumentConfig

    add_config_flags(tokenize, TokenizeConfig, TOKENIZE_FLAGS)
    add_config_flags(tokenize, DocumentConfig, DOCUMENT_FLAGS)
    tokenize.add_argument("--shards", type=positive_int, help=f"token shards (default: {TokenizeConfig().num_shards})")
    tokenize.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local processes for decontamination when no --runner is given (default: %(default)s)",
    )
    tokenize.set_defaults(handler=_tokenize, beam_args=True)


def register_trace(commands) -> None:
    trace = commands.add_parser("trace", help="the file, SWHID and licence a token came from")
    trace.add_argument("prefix", metavar="SHARD_PREFIX", help="a shard path without .bin/.idx")
    trace.add_argument("token_index", metavar="TOKEN_INDEX", type=int, help="0-based token position in the shard")
    trace.set_defaults(handler=_trace, beam_args=False)
