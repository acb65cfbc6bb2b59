"""Input records -> planned repositories for the shard writer, decontaminated and split into
mixture components; while the matcher is still being built, plans are made tentatively so the
encoder does not idle (`DecontaminatedPlanner`)."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

from codemill.records import FileRecord, records_from_table
from codemill.tokenize.config import TokenizeConfig
from codemill.tokenize.decontam import DecontamConfig, decontaminate_record, warm_matcher
from codemill.tokenize.documents import RepositoryPlan, SourceText, plan_repository
from codemill.tokenize.shard_writer import PlannedRepository, source_text
from codemill.tokenize.stats import OutsideMixture


def repositories_of(path: str, rows: int) -> Iterator[tuple[str, list[FileRecord]]]:
    """(repository, its kept records) of one input shard, read a batch of rows at a time."""
    import pyarrow as pa

    from codemill.shards import parquet_file

    current = ""
    files: list[FileRecord] = []
    for batch in parquet_file(path).iter_batches(batch_size=rows):
        for record in records_from_table(pa.Table.from_batches([batch])):
            if not record.kept or record.content is None:
                continue
            if record.repo != current:
                if files:
                    yield current, files
                current, files = record.repo, []
            files.append(record)
    if files:
        yield current, files


def matcher_in_background(config: DecontamConfig | None) -> Future | None:
    """Start building the decontamination matcher (~1 s, most of it numba loading its compiled
    kernel) in a thread; None without decontamination."""
    if config is None:
        return None
    pool = ThreadPoolExecutor(1, thread_name_prefix="codemill-matcher")
    future = pool.submit(warm_matcher, config)
    pool.shutdown(wait=False)  # the thread ends when the build is done
    return future


class DecontaminatedPlanner:
    """Decontaminates repositories and plans their clean files per mixture component.

    While the matcher is still being built, a repository is planned as if all its files were
    clean ("tentative"), so the encoder starts on the first batch instead of idling through the
    build. `settle` decontaminates the pending repositories once the matcher is ready, and `final`
    gives the plan that stands: the tentative one, or, when a file was contaminated, a new plan
    without it (which the caller encodes again; rare, as only the first few megabytes are
    tentative). The outputs are the same bytes as deciding first (a test forces every repository
    to be tentative)."""

    def __init__(self, config: TokenizeConfig, matcher: Future | None, side: list[tuple]) -> None:
        self.config, self.matcher, self.side = config, matcher, side
        self.pending: list[tuple[int, str, list[FileRecord], dict[str, RepositoryPlan | None]]] = []
        self.finals: dict[tuple[str, str], RepositoryPlan | None] = {}

    def _clean(self, records: list[FileRecord], decide: bool = True) -> tuple[dict[str, list[SourceText]], int]:
        """Clean files by component, and how many were contaminated; side outputs recorded. With
        `decide` False (a tentative plan) every file is taken as clean and nothing is recorded."""
        by_component: dict[str, list[SourceText]] = defaultdict(list)
        dropped = 0
        for record in records:
            results = decontaminate_record(record, self.config.decontam) if decide else [("clean", record)]
            for tag, value in results:
                if tag == "contaminated":
                    dropped += 1
                if tag != "clean":
                    self.side.append((tag, value))
                    continue
                component = self.config.mixture.component_of(value)
                if component is not None:
                    by_component[component].append(source_text(value))
                elif decide:
                    self.side.append(("event", OutsideMixture()))
        return by_component, dropped

    def _plans(self, repo: str, by_component: dict[str, list[SourceText]]) -> dict[str, RepositoryPlan | None]:
        return {
            component: plan_repository(repo, by_component[component], self.config.documents)
            for component in sorted(by_component)
        }

    def plan(self, index: int, repo: str, records: list[FileRecord]) -> Iterator[PlannedRepository]:
        if self.matcher is None or self.matcher.done():
            for component, plan in self._plans(repo, self._clean(records)[0]).items():
                yield PlannedRepository(index, component, repo, plan)
            return
        plans = self._plans(repo, self._clean(records, decide=False)[0])
        self.pending.append((index, repo, records, plans))
        for component, plan in plans.items():
            yield PlannedRepository(index, component, repo, plan, tentative=True)

    def settle(self) -> list[tuple[int, str]]:
        """Decontaminate every pending repository (waiting for the matcher); returns the (shard,
        component) pairs they turned out to have."""
        claims = []
        if self.pending:
            assert self.matcher is not None  # set up before any repository is held back
            self.matcher.result()  # waits for the build, or raises its error
        for index, repo, records, tentative in self.pending:
            by_component, dropped = self._clean(records)
            final = tentative if not dropped else self._plans(repo, by_component)
            for component, plan in tentative.items():
                if plan is not None:
                    self.finals[repo, component] = final.get(component)
            claims += [(index, component) for component in final]
        self.pending.clear()
        return claims

    def final(self, repo: str, component: str) -> RepositoryPlan | None:
        return self.finals.pop((repo, component))
