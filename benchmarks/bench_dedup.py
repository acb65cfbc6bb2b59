"""Near-dedup: signature throughput, full-pipeline time and memory, and quality against brute force.

Input: the kept records of a curation of the embedded default corpus (files of the installed Python
distributions, which hold real vendored copies), built on first use with
`codemill curate --no-licenses --max-files N`.

1. Signatures, one core, the same documents: codemill (numba kernels, 256 permutations) vs
   datatrove's MinhashDedupSignature (get_shingles + get_signature; 25 x 10 = 250 hashes, a \\W+
   code tokenizer and code-safe normalisation as DESIGN.md says), datasketch MinHash(256)
   update_batch and rensa RMinHash(256) over Python-made 5-gram shingles.
2. Full near-dedup, same documents and worker count: `codemill dedup` (exact + near, Beam) vs
   datatrove's four-stage MinHash pipeline (signatures, buckets, clusters, filter) on the same
   documents as JSONL, 25 x 10. Wall time and the largest process's peak RSS.
3. Quality: on a seeded random sample of distinct contents, the exact Jaccard of every pair of
   StarCoder2 shingle sets (by sparse matrix product, equal to brute force), against each method's
   clusters (tests/dedup_corpus.py `quality` defines the figures).

Usage: python benchmarks/bench_dedup.py [--files 20000] [--workers 2] [--sig-docs 5000] [--sample 5000]
Prints Markdown to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
sys.path.insert(0, str(ROOT / "tests"))

from dedup_corpus import reference_shingles  # noqa: E402

WORD = re.compile(r"\W+")


def run_measured(cmd: list[str], **kwargs) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest process of the tree) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
    return seconds, usage.ru_maxrss / 1024


def curated_corpus(files: int, workers: int) -> Path:
    out = WORK / f"curated-{files}"
    if not (out / "_SUCCESS.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "codemill.cli",
                "curate",
                "--out",
                str(out),
                "--max-files",
                str(files),
                "--no-licenses",
                "--workers",
                str(workers),
            ],
            check=True,
        )
    return out


def kept_documents(curated: Path) -> list[tuple[str, str]]:
    from codemill.shards import iter_rows

    return [(row["swhid"], row["content"]) for row in iter_rows(curated / "data", columns=["swhid", "content"])]


# ---------------------------------------------------------------- 1. signatures
def python_shingles(text: str) -> list[str]:
    tokens = [t for t in WORD.split(text.lower()) if t]
    return [" ".join(tokens[i : i + 5]) for i in range(len(tokens) - 4)]


def sig_codemill(texts: list[str]) -> None:
    from codemill.dedup.minhash import signatures

    for i in range(0, len(texts), 64):
        signatures(texts[i : i + 64])


def sig_datatrove(texts: list[str]) -> None:
    step = datatrove_signature_step()
    for text in texts:
        shingles = step.get_shingles(text)
        if len(shingles):
            step.get_signature(shingles)


def sig_datasketch(texts: list[str]) -> None:
    from datasketch import MinHash

    for text in texts:
        m = MinHash(num_perm=256, seed=1)
        m.update_batch([s.encode() for s in python_shingles(text)])


def sig_rensa(texts: list[str]) -> None:
    from rensa import RMinHash

    for text in texts:
        m = RMinHash(256, 1)
        m.update(python_shingles(text))
        m.digest()


def datatrove_config():
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    return MinhashConfig(
        n_grams=5,
        num_buckets=25,
        hashes_per_bucket=10,
        hash_config=HashConfig(precision=64),
        norm_config=TextNormConfig(norm_numbers=False, remove_punctuation=False),
    )


def datatrove_signature_step(folder: str = "/tmp/unused-sigs"):
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    return MinhashDedupSignature(output_folder=folder, config=datatrove_config(), language=code_tokenizer())


def code_tokenizer():
    from datatrove.utils.word_tokenizers import WordTokenizer

    class CodeTokenizer(WordTokenizer):
        """\\W+ tokens, as the StarCoder2 shingles (datatrove's default needs spaCy)."""

        def word_tokenize(self, text):
            return [t for t in WORD.split(text) if t]

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    return CodeTokenizer()


def bench_signatures(texts: list[str]) -> list[tuple[str, float, float]]:
    from codemill.dedup.minhash import signatures

    signatures(texts[:2])  # load the compiled kernels (numba cache) before timing
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    rows = []
    for name, fn in (
        ("codemill", sig_codemill),
        ("datatrove", sig_datatrove),
        ("datasketch", sig_datasketch),
        ("rensa", sig_rensa),
    ):
        start = time.perf_counter()
        fn(texts)
        seconds = time.perf_counter() - start
        rows.append((name, len(texts) / seconds, megabytes / seconds))
        print(f"  signatures {name}: {megabytes / seconds:.1f} MB/s", file=sys.stderr)
    return rows


# ---------------------------------------------------------------- 2. full near-dedup
DATATROVE_PIPELINE = r"""
import sys
sys.path.insert(0, {bench_dir!r})
from bench_dedup import datatrove_config, code_tokenizer
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                              MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

work, workers = {work!r}, {workers}
config = datatrove_config()
if __name__ == "__main__":
    LocalPipelineExecutor(pipeline=[JsonlReader(work + "/input"),
                                    MinhashDedupSignature(work + "/sigs", config=config, language=code_tokenizer())],
                          tasks=workers, workers=workers, logging_dir=work + "/logs/1").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(work + "/sigs", work + "/buckets", config=config)],
                          tasks=config.num_buckets, workers=workers, logging_dir=work + "/logs/2").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(work + "/buckets", work + "/remove", config=config,
                                                        save_cluster_id=True)],
                          tasks=1, logging_dir=work + "/logs/3").run()
    LocalPipelineExecutor(pipeline=[JsonlReader(work + "/input"),
                                    MinhashDedupFilter(work + "/remove", load_cluster_ids=True,
                                                       exclusion_writer=JsonlWriter(work + "/removed")),
                                    JsonlWriter(work + "/kept")],
                          tasks=workers, workers=workers, logging_dir=work + "/logs/4").run()
"""


def run_datatrove(docs: list[tuple[str, str]], workers: int) -> tuple[float, float, dict[str, str]]:
    work = WORK / "datatrove-dedup"
    shutil.rmtree(work, ignore_errors=True)
    (work / "input").mkdir(parents=True)
    per_file = (len(docs) + workers - 1) // workers
    for part in range(workers):  # one input file per task
        with open(work / "input" / f"part{part}.jsonl", "w", encoding="utf-8") as out:
            for swhid, text in docs[part * per_file : (part + 1) * per_file]:
                out.write(json.dumps({"id": swhid, "text": text}) + "\n")
    script = work / "pipeline.py"
    script.write_text(DATATROVE_PIPELINE.format(bench_dir=str(Path(__file__).parent), work=str(work), workers=workers))
    seconds, peak = run_measured([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import gzip

    clusters: dict[str, str] = {}
    for folder in ("kept", "removed"):
        for path in sorted((work / folder).glob("*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    doc = json.loads(line)
                    cluster = doc["metadata"].get("minhash_cluster_id", -1)
                    if cluster != -1:
                        clusters[doc["id"]] = str(cluster)
    return seconds, peak, clusters


def run_codemill(curated: Path, workers: int, tag: str, *extra: str) -> tuple[float, float, dict[str, str], dict]:
    out = WORK / f"codemill-dedup-{tag}"
    seconds, peak = run_measured(
        [sys.executable, "-m", "codemill.cli", "dedup", str(curated), str(out), "--workers", str(workers), *extra],
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, CODEMILL_PROGRESS="0"),
    )
    from codemill.shards import iter_rows

    # Every content in a cluster holding another content has a cluster id shared with it.
    members: dict[str, set] = {}
    for row in iter_rows(out / "manifest", columns=["swhid", "dup_cluster"]):
        if row["dup_cluster"]:
            members.setdefault(row["dup_cluster"], set()).add(row["swhid"])
    clusters = {swhid: cluster for cluster, swhids in members.items() if len(swhids) > 1 for swhid in swhids}
    return seconds, peak, clusters, json.loads((out / "dedup.json").read_text())


# ---------------------------------------------------------------- 3. quality
def exact_pairs(texts: dict[str, str], threshold: float) -> set[tuple[str, str]]:
    """Every pair with exact shingle-set Jaccard >= threshold, by a sparse product (|A n B| for all
    pairs at once); identical to checking all pairs one by one."""
    from scipy import sparse

    ids = sorted(texts)
    vocabulary: dict = {}
    rows, cols = [], []
    sizes = np.zeros(len(ids), dtype=np.int64)
    for i, swhid in enumerate(ids):
        shingles = reference_shingles(texts[swhid])
        sizes[i] = len(shingles)
        for s in shingles:
            rows.append(i)
            cols.append(vocabulary.setdefault(s, len(vocabulary)))
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(ids), len(vocabulary)))
    inter = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    union = sizes[inter.row] + sizes[inter.col] - inter.data
    hit = inter.data >= threshold * union
    return {(ids[a], ids[b]) for a, b in zip(inter.row[hit], inter.col[hit], strict=False)}


def quality_on_sample(sample: dict[str, str], true_pairs: set, clusters: dict[str, str]) -> dict:
    import itertools

    predicted = {
        (a, b)
        for a, b in itertools.combinations(sorted(sample), 2)
        if clusters.get(a) is not None and clusters.get(a) == clusters.get(b)
    }
    true_docs = {d for p in true_pairs for d in p}
    predicted_docs = {d for p in predicted for d in p}

    def ratio(hits, total):
        return hits / total if total else 1.0

    return {
        "precision": ratio(len(true_docs & predicted_docs), len(predicted_docs)),
        "recall": ratio(len(true_docs & predicted_docs), len(true_docs)),
        "pair_recall": ratio(len(true_pairs & predicted), len(true_pairs)),
        "cluster_pair_precision": ratio(len(true_pairs & predicted), len(predicted)),
        "true_pairs": len(true_pairs),
        "true_docs": len(true_docs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sig-docs", type=int, default=5000)
    parser.add_argument("--sample", type=int, default=5000)
    parser.add_argument("--skip-signatures", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)

    curated = curated_corpus(args.files, args.workers)
    docs = kept_documents(curated)
    distinct = dict(docs)
    megabytes = sum(len(t.encode()) for _, t in docs) / 1e6
    print(f"corpus: {len(docs)} kept files ({megabytes:.1f} MB), {len(distinct)} distinct contents", file=sys.stderr)

    sig_rows = [] if args.skip_signatures else bench_signatures([t for _, t in docs[: args.sig_docs]])

    results = {}
    results["codemill"] = run_codemill(curated, args.workers, "default")
    print(f"  codemill dedup: {results['codemill'][0]:.1f} s", file=sys.stderr)
    results["codemill recall-first"] = run_codemill(
        curated, args.workers, "recall-first", "--config", str(write_recall_first_config())
    )
    results["datatrove"] = run_datatrove(docs, args.workers) + (None,)
    print(f"  datatrove dedup: {results['datatrove'][0]:.1f} s", file=sys.stderr)

    rng = random.Random(0)
    sample_ids = rng.sample(sorted(distinct), min(args.sample, len(distinct)))
    sample = {swhid: distinct[swhid] for swhid in sample_ids}
    start = time.perf_counter()
    true_pairs = exact_pairs(sample, 0.7)
    brute_seconds = time.perf_counter() - start

    print(
        f"\n### Dedup benchmark, {time.strftime('%Y-%m-%d')} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()})\n"
    )
    print(
        f"Corpus: `codemill curate --no-licenses --max-files {args.files}` on the embedded default: {len(docs)} kept "
        f"files, {megabytes:.1f} MB, {len(distinct)} distinct contents.\n"
    )
    if sig_rows:
        dt = next(r for r in sig_rows if r[0] == "datatrove")
        print(f"Signatures, one core, first {args.sig_docs} kept files:\n")
        print("| method | docs/s | MB/s | vs datatrove |\n|---|---|---|---|")
        for name, docs_s, mb_s in sig_rows:
            print(f"| {name} | {docs_s:,.0f} | {mb_s:.1f} | {mb_s / dt[2]:.2f}x |")
    print(
        f"\nFull near-dedup, {args.workers} workers, Jaccard 0.7, 25 x 10 bands unless said; quality on a random "
        f"sample of {len(sample)} distinct contents ({len(true_pairs)} pairs with exact Jaccard >= 0.7, brute force "
        f"in {brute_seconds:.1f} s):\n"
    )
    print("| method | wall s | peak RSS MB | doc precision | doc recall | pair recall | cluster-pair precision |")
    print("|---|---|---|---|---|---|---|")
    for name, (seconds, peak, clusters, _report) in results.items():
        q = quality_on_sample(sample, true_pairs, clusters)
        print(
            f"| {name} | {seconds:.1f} | {peak:.0f} | {q['precision']:.3f} | {q['recall']:.3f} | "
            f"{q['pair_recall']:.3f} | {q['cluster_pair_precision']:.3f} |"
        )
    dt_seconds = results["datatrove"][0]
    print(f"\ncodemill / datatrove wall time: {dt_seconds / results['codemill'][0]:.2f}x faster")
    report = results["codemill"][3]
    print(f"codemill dedup.json totals: {json.dumps(report['totals'])}")
    print(f"connected components: {json.dumps(report['connected_components'])}")


def write_recall_first_config() -> Path:
    path = WORK / "dedup-recall-first.yaml"
    path.write_text("dedup:\n  false_positive_weight: 0.1\n  false_negative_weight: 0.9\n")
    return path


if __name__ == "__main__":
    main()
