"""Curating one work unit, and merging the fragments of one output shard (the plain-Python core of
the curation stage; no Beam here, since it runs in local pool workers too).

    unit ─read a source─> files ─build_record─> RecordStore (memory budget, then local disk)
                                 └ licence files ─LicenseCache (or ScanCode)─> findings
         ─a repository at a time, in (repo, source) order: finalize_repository─>
         one sorted fragment per output shard: data / dropped / manifest / trees
    shard ─its fragments: one is moved into place, several are sorted together─> OUT/<table>/part-i

Resume: a unit's marker (`_work/units/<unit>.json`) is written only after every fragment it wrote
is whole, and a shard's marker after its tables are in place; a rerun of the same plan skips
whatever has a marker and redoes the rest from its start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codemill.curation.config import CurationConfig
from codemill.curation.license import Detection, LicenseFinding, ScancodeDetector
from codemill.curation.license_index import license_index
from codemill.curation.license_service import SharedDetector
from codemill.curation.plan import WorkUnit
from codemill.curation.process import build_record, finalize_repository, license_text_key
from codemill.curation.sources import read_source
from codemill.curation.sources.base import RepoSummary
from codemill.curation.spill import RecordStore
from codemill.curation.stats import StatsAccumulator
from codemill.curation.unit_progress import UnitProgress
from codemill.errors import UserError
from codemill.jsonl import read_json, write_json
from codemill.records import FILE_RECORD_SCHEMA, MANIFEST_SCHEMA, TREE_SCHEMA, FileRecord, records_to_table
from codemill.shards import ROW_GROUP_BYTES, ROW_ORDER, parquet_file, shard_name, shard_of, write_table_atomic
from codemill.storage import StoragePath, location, replace, rmtree, staged

log = logging.getLogger(__name__)

TABLES = {"data": FILE_RECORD_SCHEMA, "dropped": FILE_RECORD_SCHEMA, "manifest": MANIFEST_SCHEMA, "trees": TREE_SCHEMA}


@dataclass(frozen=True)
class UnitSettings:
    """What every unit of one curation run shares."""

    config: CurationConfig
    num_shards: int
    work_dir: str  # OUT/_work: fragments and markers
    out_dir: str
    memory_budget_bytes: int  # records a worker holds in memory before spilling to local disk
    spill_dir: str | None = None  # local disk for spills (default: the system's temporary folder)
    license_cache: str | None = None  # a JSON file of known detections (normalised text hash -> SPDX)
    license_service: tuple | None = None  # (address, authkey) of the one ScanCode process, if any


@dataclass
class UnitResult:
    unit: str
    shards: list[int]  # the output shards it wrote a fragment for
    stats: dict  # StatsAccumulator.to_json() of its records
    licenses: dict[str, list] = field(default_factory=dict)  # every licence text it met: [spdx, detector, score]
    files: int = 0
    spilled_records: int = 0


# ------------------------------------------------------------------------------------ licences
def license_cache_key(text: str) -> str:
    """Texts that differ only in whitespace (re-wrapped, other line ends) are one licence text."""
    return hashlib.sha1(" ".join(text.split()).encode("utf-8", "surrogateescape")).hexdigest()


class LicenseCache:
    """Licence detections, one cache per worker process. Every text goes to the fast path
    (license_index.py) first; a text it cannot settle goes to ScanCode unless ScanCode already
    detected it (in this run, a previous run, or a corpus whose `license_cache.json` was given,
    keyed by the normalised text). ScanCode's ~1.4 GB index is loaded only when needed."""

    def __init__(self) -> None:
        self.known: dict[str, Detection] = {}
        self.loaded: set[str] = set()
        self.detector: ScancodeDetector | SharedDetector | None = None
        self.service: tuple | None = None  # the address of a shared ScanCode process, if any
        self.pending: dict[str, Future] = {}
        self.threads: ThreadPoolExecutor | None = None

    def load(self, path: str | None) -> None:
        if path is None or path in self.loaded:
            return
        self.loaded.add(path)
        self.known.update(read_license_cache(location(path)))

    def use_service(self, address: tuple | None) -> None:
        if address != self.service:
            self.service, self.detector = address, None
            if self.threads is not None:
                self.threads.shutdown(wait=True)
                self.threads = None

    def detect(self, text: str, fast_path: bool = True) -> tuple[str, Detection | Future]:
        """The fast path always answers first (it is cheap, and so a cache filled under other
        settings never changes what a run records); the cache stands in for ScanCode only. A text
        for ScanCode is detected in the background (a Future): a repository with thousands of
        licence files keeps every ScanCode process busy while the unit reads on."""
        key = license_cache_key(text)
        index = license_index() if fast_path else None
        match = index.match(text) if index is not None else None
        if match is not None:
            return key, Detection(match.spdx, "index", match.score)
        known = self.known.get(key)
        if known is not None and known.detector == "scancode":
            return key, known
        if key not in self.pending:
            if self.detector is None:
                if self.service is not None:
                    from codemill.curation.license_service import connect

                    self.detector = connect(self.service)
                else:
                    self.detector = ScancodeDetector()
            if self.threads is None:
                # As many requests in flight as the service has ScanCode processes; in-process one.
                self.threads = ThreadPoolExecutor(
                    self.service[2] if self.service else 1, thread_name_prefix="codemill-scancode"
                )
            self.pending[key] = self.threads.submit(self._scancode, key, text)
        return key, self.pending[key]

    def _scancode(self, key: str, text: str) -> Detection:
        detection = Detection(self.detector.detect_text(text), "scancode")  # type: ignore[union-attr]
        self.known[key] = detection
        return detection

    def settle(self) -> None:
        """Wait for every detection in flight (a unit's findings are complete after this)."""
        for future in self.pending.values():
            future.result()
        self.pending.clear()


def read_license_cache(path: StoragePath) -> dict[str, Detection]:
    """{text key: Detection} of a `license_cache.json` (empty when there is none)."""
    try:
        entries = read_json(path).get("detections", {})
    except FileNotFoundError:
        return {}
    except ValueError as err:
        raise UserError(f"licence cache {path} is not valid JSON ({err}); remove it or give another") from None
    return {key: Detection(*value) for key, value in entries.items()}


_LICENSES = LicenseCache()


# ------------------------------------------------------------------------------------ fragments
_PENDING_BYTES = 4 * ROW_GROUP_BYTES  # rows all of a unit's fragment writers may hold before writing


def fragment_dir(work_dir: str, shard: int, unit: str) -> StoragePath:
    return location(work_dir) / "fragments" / f"shard-{shard:05d}" / unit


class _FragmentWriter:
    """One unit's sorted rows for one output shard: data, dropped and manifest streamed in row
    groups of ~8 MB of content, trees written at the end (a repository's trees are small)."""

    def __init__(self, directory: StoragePath) -> None:
        self.directory = directory
        # Each table is written to a local file and published whole when the unit is done
        # (renamed, or uploaded to object storage).
        self.files = contextlib.ExitStack()
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.pending: list[FileRecord] = []
        self.pending_bytes = 0
        self.trees: list = []

    def _writer(self, table: str) -> pq.ParquetWriter:
        if table not in self.writers:
            local = self.files.enter_context(staged(self.directory / f"{table}.parquet"))
            self.writers[table] = pq.ParquetWriter(local, TABLES[table], compression="zstd", write_statistics=True)
        return self.writers[table]

    def add(self, record: FileRecord) -> None:
        self.pending.append(record)
        self.pending_bytes += len(record.content or "") + 200
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        rows = self.pending
        for table, selected in (
            ("data", [r for r in rows if r.kept]),
            ("dropped", [r for r in rows if not r.kept]),
            ("manifest", rows),
        ):
            if selected:
                chunk = records_to_table(selected, TABLES[table])
                self._writer(table).write_table(chunk, row_group_size=chunk.num_rows)
        self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        self.flush()
        if self.trees:
            chunk = records_to_table(self.trees, TREE_SCHEMA)
            self._writer("trees").write_table(chunk, row_group_size=chunk.num_rows)
        for table in TABLES:
            self._writer(table).close()  # a table with no rows is an empty file with the schema
        self.files.close()

    def abort(self) -> None:
        """Drop what was written (a failed unit leaves no fragment that looks whole)."""
        for writer in self.writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self.files.__exit__(RuntimeError, RuntimeError("unit failed"), None)


# ------------------------------------------------------------------------------------ one unit
def unit_marker(work_dir: str, unit: str) -> StoragePath:
    return location(work_dir) / "units" / f"{unit}.json"


def result_from_marker(path: StoragePath) -> UnitResult:
    return UnitResult(**read_json(path))


Detected = tuple[str, str, str, "Detection | Future"]  # (repo key, licence file, text key, outcome)


def _read_unit(
    unit: WorkUnit, config, store: RecordStore, progress: UnitProgress
) -> tuple[dict[str, RepoSummary], list[Detected]]:
    """Every file of the unit's sources built into a record and put in the store, by repository;
    licence texts handed to the detector as they pass. Returns the repositories' summaries and the
    detections started."""
    summaries: dict[str, RepoSummary] = {}
    detected: list[Detected] = []
    for spec in unit.specs:
        for item in read_source(spec):
            if isinstance(item, RepoSummary):
                if item.error:
                    log.warning("%s: %s", item.source_uri, item.error)
                summaries[item.repo_key] = item
                continue
            record = build_record(item, config)
            if config.detect_licenses and license_text_key(record) is not None:
                key, found = _LICENSES.detect(record.content, config.license_fast_path)  # type: ignore[arg-type]
                detected.append((item.repo_key, record.path, key, found))
            store.add(item.repo_key, record)
            progress.add()
    _LICENSES.settle()
    progress.write()
    return summaries, detected


def _license_findings(detected: list[Detected]) -> tuple[dict[str, list[LicenseFinding]], dict[str, list]]:
    """The finished detections as each repository's findings, and the unit's known texts (for the cache)."""
    findings: dict[str, list[LicenseFinding]] = {}
    licenses: dict[str, list] = {}
    for repo_key, path, key, found in detected:
        done = found.result() if isinstance(found, Future) else found
        licenses[key] = [done.spdx, done.detector, done.score]
        directory = path.rsplit("/", 1)[0] if "/" in path else ""
        findings.setdefault(repo_key, []).append(LicenseFinding(directory, path, done.spdx, done.detector, done.score))
    return findings, licenses


def curate_unit(unit: WorkUnit, settings: UnitSettings) -> list[UnitResult]:
    """Curate a unit's sources into fragments, one per output shard its repositories belong to.
    A unit already finished by an earlier run of the same plan is not redone."""
    marker = unit_marker(settings.work_dir, unit.name)
    if marker.exists():
        return [result_from_marker(marker)]
    config, n = settings.config, settings.num_shards
    for stale in (location(settings.work_dir) / "fragments").glob(f"shard-*/{unit.name}"):
        rmtree(stale)  # a killed earlier attempt's partial fragments
    _LICENSES.load(settings.license_cache)
    _LICENSES.use_service(settings.license_service)
    store = RecordStore(settings.memory_budget_bytes, settings.spill_dir)
    writers: dict[int, _FragmentWriter] = {}
    finished = False
    try:
        summaries, detected = _read_unit(unit, config, store, UnitProgress(settings.work_dir, unit.name))
        findings, licenses = _license_findings(detected)
        for key, summary in summaries.items():
            store.declare(key, summary.repo, summary.source_uri)  # a repository without files has trees too
        stats = StatsAccumulator()

        def writer(shard: int) -> _FragmentWriter:
            if shard not in writers:
                writers[shard] = _FragmentWriter(fragment_dir(settings.work_dir, shard, unit.name))
            return writers[shard]

        files = 0
        for key in store.ordered_groups():
            repo_summary = summaries.get(key)
            repo_findings = sorted(findings.get(key, ()), key=lambda f: f.path)
            for record in finalize_repository(store.pop(key), repo_findings, repo_summary, config):
                stats.add(record)
                files += 1
                writer(shard_of(record.repo, n)).add(record)
            if repo_summary is not None:
                for tree in repo_summary.trees:
                    writer(shard_of(tree.repo, n)).trees.append(tree)
            # A table's unit writes to many shards: bound what all its writers hold together.
            if sum(w.pending_bytes for w in writers.values()) > _PENDING_BYTES:
                for fragment in writers.values():
                    fragment.flush()
        for fragment in writers.values():
            fragment.close()
        finished = True
    finally:
        store.close()
        if not finished:
            for fragment in writers.values():
                fragment.abort()
    result = UnitResult(unit.name, sorted(writers), stats.to_json(), licenses, files, store.spilled_records)
    if store.spilled_records:
        log.info(
            "curate: unit %s spilled %d files (%.1f MB) to local disk",
            unit.name,
            store.spilled_records,
            store.spilled_bytes / 1e6,
        )
    write_json(marker, vars(result))
    return [result]


# ------------------------------------------------------------------------------------ one shard
def shard_marker(work_dir: str, shard: int) -> StoragePath:
    return location(work_dir) / "shards" / f"{shard:05d}.done"


def _sorted(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables)
    # Nulls first, as a unit orders a missing SWHID (""); stable, so rows equal in every key keep
    # the units' order.
    keys = [(name, "ascending", "at_start") for name in ROW_ORDER if name in table.column_names]
    return table.take(pc.sort_indices(table, sort_keys=keys))


def merge_shard(shard: int, units: list[str], settings: UnitSettings) -> None:
    """Put output shard `shard` in place from the fragments the named units wrote for it: a single
    fragment is moved as it is (rows already sorted), several are sorted together (a shard is
    sized to fit in memory), none gives empty tables."""
    marker = shard_marker(settings.work_dir, shard)
    if marker.exists():
        return
    n = settings.num_shards
    sources = [fragment_dir(settings.work_dir, shard, unit) for unit in sorted(units)]
    for table, schema in TABLES.items():
        final = location(settings.out_dir) / table / shard_name(shard, n)
        final.parent.mkdir(parents=True, exist_ok=True)
        parts = [source / f"{table}.parquet" for source in sources]
        if len(parts) == 1:
            if parts[0].exists():
                replace(parts[0], final)
            elif not final.exists():  # moved by a killed earlier attempt, else lost
                raise FileNotFoundError(f"fragment {parts[0]} of shard {shard} is missing; rerun with --fresh")
        else:
            tables = [parquet_file(part).read() for part in parts]
            write_table_atomic(final, _sorted(tables) if tables else schema.empty_table())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    for source in sources:
        rmtree(source)


def merged_stats(results: list[UnitResult]) -> StatsAccumulator:
    total = StatsAccumulator()
    for result in results:
        total.merge(StatsAccumulator.from_json(result.stats))
    return total
