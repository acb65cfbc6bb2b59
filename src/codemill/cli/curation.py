"""`codemill curate`, `dedup`, `manifest verify` and `publish`: the data-curation commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from codemill.cli.common import (
    add_config_flags,
    config_changes,
    load_config_section,
    positive_int,
)
from codemill.errors import UserError
from codemill.pipelines.reports import CurationStats, DedupReport

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


# The options that set a config field of the same name.
CURATE_FLAGS = ("shard_mb", "memory_budget_mb", "spill_dir")
DEDUP_FLAGS = ("mode", "threshold", "num_perm", "ngram", "bands", "rows", "seed", "cc_rounds")


def _curate(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses

    from codemill.curation.config import CurationConfig
    from codemill.curation.optout import OptOutList
    from codemill.curation.sources import plan_sources
    from codemill.pipelines.curate import run_curation

    config = load_config_section(args.config, "curate", CurationConfig)
    changes: dict = {}
    if args.optout:
        changes["optout"] = OptOutList.from_file(Path(args.optout))
    if args.no_pii:
        changes["redact_pii"] = False
    if args.no_licenses:
        changes["detect_licenses"] = False
    if args.shards is not None:
        changes["num_shards"] = args.shards
    changes.update(config_changes(args, CURATE_FLAGS))
    if args.dedup == "none":
        changes["dedup"] = None
    elif args.dedup:
        from codemill.dedup.config import DedupConfig

        changes["dedup"] = dataclasses.replace(config.dedup or DedupConfig(), mode=args.dedup)
    config = dataclasses.replace(config, **changes)
    sources, max_files = _sources(args)
    specs = plan_sources(
        sources,
        args.source_kind,
        max_files=max_files,
        limits=config.limits,
        ref=args.ref,
        content_store=args.content_store,
    )
    if not specs:
        print("codemill: nothing to read (no sources found)", file=sys.stderr)
        return 2
    what = "the embedded default corpus (installed Python distributions)" if not sources else ", ".join(sources)
    print(f"codemill curate: {len(specs)} repositories from {what} -> {args.out}", file=sys.stderr)
    result = run_curation(specs, args.out, config, beam_args, processes=args.workers, license_cache=args.license_cache)
    totals = CurationStats.from_json(result.stats).totals
    if not totals.files:
        raise UserError(f"the sources held no files ({what}); {args.out} has empty tables")
    if config.dedup is not None:
        _print_dedup_summary(result.out_dir)
    print(
        f"\ncurated {totals.files} files ({totals.bytes / 1e6:.1f} MB) in {result.seconds:.1f} s: "
        f"kept {totals.kept_files}, dropped {totals.dropped_files}\n"
        f"  kept records : {result.out_dir / 'data'}\n"
        f"  dropped      : {result.out_dir / 'dropped'}\n"
        f"  manifest     : {result.manifest_dir}  (check it: codemill manifest verify {result.out_dir})\n"
        f"  trees        : {result.out_dir / 'trees'}\n"
        f"  stats        : {result.out_dir / 'stats.json'}"
    )
    return 0


def _sources(args: argparse.Namespace) -> tuple[list[str], int | None]:
    """(SOURCE paths, cap on the default corpus): without SOURCE, the `run: sources` of a run config
    given with --config (else the embedded default corpus); --max-files defaults to the run's."""
    from codemill.pipelines.run_config import JobConfig

    job = JobConfig.from_dict(load_config_section(args.config, "run", None, whole_file=False))
    sources = list(args.sources) or list(job.sources)
    if sources and not args.sources:
        print(f"codemill curate: the sources of {args.config} (run: sources): {', '.join(sources)}", file=sys.stderr)
    if args.max_files is not None and sources:
        print(
            "codemill curate: --max-files caps only the embedded default corpus; SOURCE paths are read whole",
            file=sys.stderr,
        )
    return sources, job.max_files if args.max_files is None else args.max_files


def _print_dedup_summary(out_dir) -> None:
    report = DedupReport.read(out_dir)
    if report is None:
        return
    totals, config = report.totals, report.config
    line = f"dedup ({config['mode']}"
    if config["mode"] == "near":
        cc = report.connected_components or {"rounds": 0}
        line += (
            f", {config['num_perm']} permutations, LSH {config['bands']} bands x {config['rows']} rows, "
            f"Jaccard >= {config['threshold']}; components settled in {cc['rounds']} rounds"
        )
    print(
        f"{line}): {totals.files} files, {totals.clusters} clusters, removed "
        f"{totals.removed_exact} exact and {totals.removed_near} near duplicates "
        f"({totals.removed_bytes / 1e6:.1f} MB); {totals.too_short_for_near_dedup} texts "
        "too short for one shingle (exact dedup only)"
    )


def _dedup(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses

    from codemill.dedup.config import DedupConfig
    from codemill.pipelines.dedup import run_dedup

    config = load_config_section(args.config, "dedup", DedupConfig)
    changes = config_changes(args, DEDUP_FLAGS)
    if args.no_verify:
        changes["verify"] = False
    config = dataclasses.replace(config, **changes)
    if config.mode == "near":
        bands, rows = config.bands_rows
        print(
            f"codemill dedup: near dedup with {config.ngram}-gram shingles, {config.num_perm} permutations, "
            f"Jaccard >= {config.threshold}: LSH {bands} bands x {rows} rows",
            file=sys.stderr,
        )
    result = run_dedup(args.input, args.output, config, beam_args, processes=args.workers)
    _print_dedup_summary(result.out_dir)
    kept = CurationStats.from_json(result.stats).totals
    print(
        f"kept {kept.kept_files} of {kept.files} files in {result.seconds:.1f} s -> "
        f"{result.out_dir} (data/, dropped/, manifest/, stats.json, dedup.json)"
    )
    return 0


def _manifest_verify(args: argparse.Namespace) -> int:
    from codemill.curation.manifest import verify

    report = verify(args.dir)
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


def _publish(args: argparse.Namespace) -> int:
    import dataclasses

    from codemill.pipelines.publish import publish_dataset
    from codemill.pipelines.run_config import PublishConfig

    config = load_config_section(args.config, "publish", PublishConfig)
    if args.permissive_only:
        config = dataclasses.replace(config, permissive_only=True)
    published = publish_dataset(args.input, args.out, config)
    print(
        f"published {published.rows:,} rows in {published.shards} Parquet shard(s) -> {published.dataset_dir}\n"
        f'  load it: datasets.load_dataset("parquet", data_dir={str(published.dataset_dir / "data")!r})'
    )
    return 0


def register_curate(commands) -> None:
    from codemill.pipelines.run_config import JobConfig

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
        type=positive_int,
        help=f"cap on files taken from the embedded default corpus (default {JobConfig().max_files}, the run's)",
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
        "--shards",
        type=positive_int,
        help="output shards per table (default: the estimated input size over --shard-mb)",
    )
    from codemill.curation.config import CurationConfig

    add_config_flags(curate, CurationConfig, CURATE_FLAGS)
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
    curate.set_defaults(handler=_curate, beam_args=True)


def register_dedup(commands) -> None:
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
    from codemill.dedup.config import DedupConfig

    add_config_flags(dedup, DedupConfig, DEDUP_FLAGS)
    dedup.add_argument(
        "--no-verify", action="store_true", help="do not check candidate pairs by the Jaccard of their shingle sets"
    )
    dedup.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local processes for signatures when no --runner is given (default: %(default)s)",
    )
    dedup.set_defaults(handler=_dedup, beam_args=True)


def register_manifest(commands) -> None:
    manifest = commands.add_parser("manifest", help="provenance manifest tools")
    manifest_commands = manifest.add_subparsers(dest="manifest_command", metavar="ACTION")
    verify = manifest_commands.add_parser("verify", help="re-read the sources and recompute every SWHID")
    verify.add_argument("dir", help="a curation output directory")
    verify.add_argument("--max-problems", type=int, default=50, help="problems to print (default: %(default)s)")
    verify.set_defaults(handler=_manifest_verify, beam_args=False)


def register_publish(commands) -> None:
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
    publish.set_defaults(handler=_publish, beam_args=False)
