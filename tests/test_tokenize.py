"""Tokenize stage: decontamination, tokenizer, FIM documents, Megatron shards and the trace."""

from __future__ import annotations

import functools
import json
import random
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st

from codemill.cli import main
from codemill.tokenize.benchmarks import BenchmarkError, load_humaneval
from codemill.tokenize.config import DecontamConfig
from codemill.tokenize.decontam import Decontaminator
from codemill.tokenize.documents import (
    DocumentConfig,
    SourceText,
    build_documents,
    undo_fim,
)
from codemill.tokenize.indexed import ShardError, token_dtype, trace, write_shard
from codemill.tokenize.tokenizer import (
    EOS,
    FILE_SEP,
    REPO_NAME,
    SPECIAL_TOKENS,
    TokenizerConfig,
    TokenizerError,
    load_tokenizer,
    train_tokenizer,
)

# Real code that is on every machine: small modules of the standard library.
CODE_FILES = [p for p in sorted(Path(json.__file__).parent.parent.glob("*.py")) if 500 <= p.stat().st_size <= 6000][:60]


def code_texts() -> list[str]:
    return [p.read_text() for p in CODE_FILES]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(code_texts() * 2, out, TokenizerConfig(vocab_size=1024))
    return out


# ---------------------------------------------------------------- decontamination
def test_pasted_humaneval_solution_is_caught_and_common_lines_are_not() -> None:
    config = DecontamConfig()
    matcher = Decontaminator(config.load_tasks(), config)
    task = load_humaneval()[12]
    prompt, solution = task.texts[0], task.texts[1]
    pasted = (
        "import os\n\n\n" + prompt.replace("    ", "\t") + solution + "\n\nif __name__ == '__main__':\n    main()\n"
    )
    assert matcher.match(pasted).label == f"humaneval:{task.task_id}"
    # A clean file that shares common lines (imports, a loop, a return) with many tasks.
    clean = (
        "from typing import List\nimport math\n\n\ndef mean(numbers: List[float]) -> float:\n"
        "    total = 0.0\n    for x in numbers:\n        total += x\n    return total / len(numbers)\n"
    )
    assert matcher.match(clean) is None
    assert matcher.match("") is None


@pytest.mark.skipif(not (SHARED / "benchmarks" / "mbpp").exists(), reason=f"benchmark data not found under {SHARED}")
def test_mbpp_and_gsm8k_and_any_jsonl(tmp_path: Path) -> None:
    extra = tmp_path / "private.jsonl"
    extra.write_text(
        json.dumps(
            {
                "task_id": "p1",
                "body": "def secret_sauce(recipe):\n    return sorted(recipe, "
                "key=lambda item: item.weight, reverse=True)[:3]\n",
            }
        )
        + "\n"
    )
    config = DecontamConfig(
        benchmarks={
            "mbpp": str(SHARED / "benchmarks/mbpp/mbpp.jsonl"),
            "gsm8k": str(SHARED / "benchmarks/gsm8k/test.jsonl"),
            "private": str(extra),
        },
        extra_fields={"private": ["body"]},
    )
    matcher = Decontaminator(config.load_tasks(), config)
    mbpp = [json.loads(line) for line in (SHARED / "benchmarks/mbpp/mbpp.jsonl").read_text().splitlines()]
    row = next(r for r in mbpp if r["task_id"] == 11)
    assert matcher.match("# helpers\n" + row["code"] + "\n").label == "mbpp:11"
    gsm = json.loads((SHARED / "benchmarks/gsm8k/test.jsonl").read_text().splitlines()[5])
    assert matcher.match(f'PROMPT = """{gsm["question"]}"""\n').benchmark == "gsm8k"
    assert matcher.match("x = 1\n" + json.loads(extra.read_text())["body"]).label == "private:p1"


def test_exact_matching_equals_plain_substring_search() -> None:
    """The rolling-hash matcher finds exactly the tasks whose normalised texts are substrings."""
    from codemill.tokenize.benchmarks import BenchmarkTask
    from codemill.tokenize.decontam import normalise

    rng = random.Random(5)
    words = ["def", "return", "x", "é", "日本", "(", ")", ":", "\n", "    ", "numbers", "_", "1", "\t"]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    tasks = [BenchmarkTask("b", str(i), (text(30), text(8))) for i in range(40)]
    config = DecontamConfig(min_exact_chars=50, ngram_overlap=1.0, ngram=200)  # exact test only
    matcher = Decontaminator(tasks, config)
    for _ in range(300):
        chosen = rng.sample(tasks, rng.randrange(0, 3))
        parts = [text(rng.randrange(0, 40))]
        for task in chosen:
            parts += [rng.choice(task.texts).replace(" ", rng.choice([" ", "  ", "\n"])), text(rng.randrange(0, 20))]
        haystack = "".join(parts)
        expected = [
            t for t in tasks if any(len(normalise(x)) >= 50 and normalise(x) in normalise(haystack) for x in t.texts)
        ]
        found = matcher.match(haystack)
        assert (found is None) == (not expected)
        if expected:
            assert found.label == min(t.label for t in expected)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=400))
def test_ascii_texts_scan_the_same_as_bytes_and_as_code_points(body: str) -> None:
    """ASCII texts reach the kernel as one byte per character, others as UTF-32: both forms of
    the same text give the same windows and grams."""
    from codemill.tokenize.decontam import _code_point_array

    matcher = _small_matcher()
    text = matcher.tasks[0].texts[0][:40] + body + " ".join(matcher.tasks[1].texts)[:300]
    narrow = _code_point_array(text)
    assert narrow.dtype == np.uint8
    results = []
    for cps in (narrow, narrow.astype(np.uint32)):
        grams, positions, anchors = (np.zeros(4096, dtype=t) for t in (np.uint64, np.int64, np.uint64))
        found = matcher._scan(cps, matcher.gram_set, False, grams, positions, anchors)
        results.append((found, grams.tolist(), positions.tolist(), anchors.tolist()))
    assert results[0] == results[1]
    assert results[0][0][0] > 0  # the task's text was found through the byte form


@functools.lru_cache(maxsize=1)
def _small_matcher() -> Decontaminator:
    config = DecontamConfig(min_exact_chars=8)
    return Decontaminator(config.load_tasks()[:20], config)


def test_scan_tables_follow_python() -> None:
    """The kernel's whitespace, lowercase and word tables agree with str.isspace / str.lower /
    `re`'s \\w for every code point."""
    import re

    from codemill.tokenize.decontam import _char_tables

    classes, lower = _char_tables()
    word = re.compile(r"\w")
    for c in range(0x110000):
        ch = chr(c)
        low = ch.lower()[0]
        assert bool(classes[c] & 1) == ch.isspace(), hex(c)
        assert lower[c] == ord(low), hex(c)
        assert bool(classes[c] & 2) == bool(word.match(low)), hex(c)


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 2**64 - 1), max_size=300), st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_hash_set_reports_exact_members(members: set[int], probes: list[int]) -> None:
    from codemill.tokenize.decontam import HashSet, _member_of

    table = HashSet.of(members)
    for value in list(members) + probes:
        assert _member_of(table.rows, table.bits, table.values, np.uint64(value)) == (value in members)


def test_benchmark_gram_counts_equal_the_dedup_shingles() -> None:
    """The scan's 13-grams are the dedup shingles' (lowercased \\w runs): the same number of
    distinct grams per task."""
    from codemill.dedup.minhash import shingle_sets

    config = DecontamConfig()
    tasks = config.load_tasks()
    matcher = Decontaminator(tasks, config)
    expected = [len(s) for s in shingle_sets(["\n".join(t.texts) for t in tasks], config.ngram)]
    assert matcher.ngram_counts.tolist() == expected


def test_bad_benchmark_input_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(BenchmarkError, match="broken.jsonl: line 2"):
        DecontamConfig(benchmarks={"mbpp": str(broken)}).load_tasks()
    with pytest.raises(ValueError, match="extra_fields"):
        DecontamConfig(benchmarks={"mine": "x.jsonl"})
    with pytest.raises(BenchmarkError, match="cannot read"):
        DecontamConfig(benchmarks={"gsm8k": str(tmp_path / "missing.jsonl")}).load_tasks()


# ---------------------------------------------------------------- tokenizer
def test_tokenizer_loads_in_transformers_with_the_special_tokens(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    ours = load_tokenizer(tokenizer_dir)
    theirs = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = "def add(a, b):\n    return a + b  # 12345\n"
    assert theirs.encode(text) == ours.encode(text).ids
    assert theirs.decode(theirs.encode(text)) == text
    for token in SPECIAL_TOKENS:
        assert theirs.encode(token) == [ours.token_to_id(token)]
    assert theirs.eos_token == EOS
    assert ours.get_vocab_size() == 1024


def test_tokenizer_without_special_tokens_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel()
    plain.train_from_iterator(code_texts()[:5], trainers.BpeTrainer(vocab_size=300, show_progress=False))
    plain.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="lacks the special tokens"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="no tokenizer"):
        load_tokenizer(tmp_path / "nowhere")


# ---------------------------------------------------------------- documents
def sources(texts: list[str], repo: str = "org/repo") -> list[SourceText]:
    from codemill.curation.swhid import blob_id

    return [
        SourceText(f"swh:1:cnt:{blob_id(t.encode()).hex()}", None, repo, f"pkg/file{i:03d}.py", t, "MIT", "permissive")
        for i, t in enumerate(texts)
    ]


def decoded_bodies(docs, tokenizer) -> dict[tuple[str, int], str]:
    out = {}
    for doc in docs:
        for span in doc.spans:
            ids = doc.tokens[span.content_token_start : span.token_end].tolist()
            out[(span.swhid, span.char_start)] = tokenizer.decode(ids, skip_special_tokens=False)
    return out


def test_fim_documents_decode_back_to_the_files(tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    files = sources(code_texts()[:30])
    config = DocumentConfig(seed=3, fim_rate=0.5, max_tokens=4096)
    docs = list(build_documents("org/repo", files, tokenizer, config))
    by_swhid = {f.swhid: f for f in files}
    fims = set()
    for doc in docs:
        assert doc.tokens[-1] == tokenizer.token_to_id(EOS) and len(doc.tokens) <= config.max_tokens
        for span in doc.spans:
            fims.add(span.fim)
            body = tokenizer.decode(
                doc.tokens[span.content_token_start : span.token_end].tolist(), skip_special_tokens=False
            )
            assert undo_fim(body) == by_swhid[span.swhid].content[span.char_start : span.char_end]
    assert fims == {"", "psm", "spm"}
    # Same seed, same documents; another seed, other draws.
    again = list(build_documents("org/repo", list(reversed(files)), tokenizer, config))
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(docs, again, strict=True)) and len(docs) == len(again)
    other = list(build_documents("org/repo", files, tokenizer, DocumentConfig(seed=4, max_tokens=4096)))
    assert any(not np.array_equal(a.tokens, b.tokens) for a, b in zip(docs, other, strict=True))


def test_pipelined_batch_encoding_equals_one_repository_at_a_time(tokenizer_dir: Path) -> None:
    """encode_plans (batches across repositories, the next one encoding in a thread) gives every
    repository exactly the ids it gets alone, in input order, at any batch size."""
    from codemill.tokenize.documents import encode_pieces, encode_plans, plan_repository

    tok = load_tokenizer(tokenizer_dir)
    texts = code_texts()
    plans = [
        plan_repository(
            f"r{i}",
            [
                SourceText(f"s{j}", None, f"r{i}", f"m{j}.py", texts[j % len(texts)], None, "no_license")
                for j in range(i, i + 3)
            ],
            DocumentConfig(seed=i),
        )
        for i in range(0, 30, 3)
    ]
    alone = [encode_pieces(tok, plan.pieces) for plan in plans]
    for batch_chars in (1, 5_000, 10**9):
        got = list(encode_plans(tok, iter(plans), batch_chars))
        assert [plan.repo for plan, _ in got] == [plan.repo for plan in plans]
        for (_, ids), expected in zip(got, alone, strict=True):
            assert len(ids) == len(expected) and all(np.array_equal(a, b) for a, b in zip(ids, expected, strict=True))


def test_document_format_with_and_without_metadata(tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    files = sources(["a = 1\n", "", "b = 2\n"])
    with_meta = next(build_documents("org/r", files, tokenizer, DocumentConfig(metadata_rate=1.0, fim_rate=0.0)))
    text = tokenizer.decode(with_meta.tokens.tolist(), skip_special_tokens=False)
    assert text == f"{REPO_NAME}org/r{FILE_SEP}pkg/file000.py\na = 1\n{FILE_SEP}pkg/file002.py\nb = 2\n{EOS}"
    bare = next(build_documents("org/r", files, tokenizer, DocumentConfig(metadata_rate=0.0, fim_rate=0.0)))
    assert (
        tokenizer.decode(bare.tokens.tolist(), skip_special_tokens=False) == f"{FILE_SEP}a = 1\n{FILE_SEP}b = 2\n{EOS}"
    )
    assert list(build_documents("org/r", sources(["", ""]), tokenizer, DocumentConfig())) == []  # empty files only
    # Special-token text inside a file stays text: the document keeps its structure.
    tricky = sources([f"s = '{EOS}'  # {FILE_SEP} <fim_prefix>\n"])
    doc = next(build_documents("org/r", tricky, tokenizer, DocumentConfig(metadata_rate=0.0, fim_rate=0.0)))
    assert doc.tokens.tolist().count(tokenizer.token_to_id(EOS)) == 1
    assert doc.tokens.tolist().count(tokenizer.token_to_id(FILE_SEP)) == 1
    assert tokenizer.decode(doc.tokens.tolist(), skip_special_tokens=False) == f"{FILE_SEP}{tricky[0].content}{EOS}"


@pytest.mark.parametrize("non_ascii", [False, True])
def test_long_files_are_split_at_token_boundaries_and_traced(tokenizer_dir: Path, non_ascii: bool) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    big = "\n".join(code_texts()[:8])
    if non_ascii:  # multi-byte characters that byte-level tokens cut through
        big = big.replace("e", "é").replace("a", "日本")
    files = sources(["x = 1\n", big, "y = 2\n"])
    config = DocumentConfig(max_tokens=512, fim_rate=1.0)
    docs = list(build_documents("org/repo", files, tokenizer, config))
    assert all(len(d.tokens) <= 512 for d in docs)
    pieces = sorted((s.char_start, s.char_end) for d in docs for s in d.spans if s.swhid == files[1].swhid)
    assert len(pieces) > 3 and pieces[0][0] == 0 and pieces[-1][1] == len(big)
    assert all(a[1] == b[0] for a, b in pairwise(pieces))  # contiguous, nothing lost
    bodies = decoded_bodies(docs, tokenizer)
    assert "".join(bodies[(files[1].swhid, start)] for start, _ in pieces) == big
    # The byte-length cuts (byte-level BPE) agree with the decoding cuts (any tokenizer).
    from codemill.tokenize.documents import _cuts_by_bytes, _cuts_by_decoding

    tokens = np.asarray(tokenizer.encode(big).ids)
    assert _cuts_by_bytes(big, tokens, 300, tokenizer) == _cuts_by_decoding(files[1], tokens, 300, tokenizer)
    assert [d.index for d in docs] == list(range(len(docs)))


# ---------------------------------------------------------------- shards and trace
def test_shards_read_back_by_megatron_and_trace_every_token(tmp_path: Path, tokenizer_dir: Path) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tokenizer = load_tokenizer(tokenizer_dir)
    files = sources(code_texts()[:25])
    docs = list(build_documents("org/repo", files, tokenizer, DocumentConfig(max_tokens=2048)))
    prefix = tmp_path / "part-0"
    info = write_shard(prefix, docs, token_dtype(tokenizer.get_vocab_size()))
    dataset = IndexedDataset(str(prefix))
    assert len(dataset) == len(docs) == info.documents
    for i, doc in enumerate(docs):
        assert np.array_equal(dataset[i], doc.tokens)
    assert dataset[0].dtype == np.uint16
    stream = np.concatenate([d.tokens for d in docs])
    by_swhid = {f.swhid: f.content for f in files}
    specials = {tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    rng = random.Random(1)
    checked = 0
    for token_index in rng.sample(range(len(stream)), 400):
        hit = trace(prefix, token_index)
        if not hit.in_content or int(stream[token_index]) in specials:
            continue
        piece = tokenizer.decode([int(stream[token_index])])
        if "\ufffd" in piece:  # a byte of a multi-byte character
            continue
        assert piece and piece in by_swhid[hit.file["swhid"]], (token_index, piece)
        checked += 1
    assert checked > 200
    with pytest.raises(ShardError, match="outside"):
        trace(prefix, len(stream))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_our_writer_is_byte_identical_to_megatron_core(tmp_path: Path, dtype) -> None:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from codemill.tokenize.indexed import IndexedWriter

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 60000, int(n)) for n in rng.integers(1, 3000, 40)]
    ours = IndexedWriter(str(tmp_path / "ours.bin"), dtype)
    theirs = IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for doc in docs:
        ours.add_document(doc)
        theirs.add_item(torch.from_numpy(doc))
        theirs.end_document()
    ours.finalize(str(tmp_path / "ours.idx"))
    theirs.finalize(str(tmp_path / "theirs.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"theirs{suffix}").read_bytes()


def test_token_dtype_rules() -> None:
    assert token_dtype(8192) is np.uint16 and token_dtype(65499) is np.uint16 and token_dtype(65500) is np.int32
    assert token_dtype(70000, "int32") is np.int32
    with pytest.raises(ShardError, match="does not fit uint16"):
        token_dtype(70000, "uint16")


# ---------------------------------------------------------------- the stage, end to end
def test_tokenize_stage_end_to_end(tmp_path: Path, repo_dir: Path) -> None:
    (repo_dir / "src" / "pkg" / "solved.py").write_text("# found online\n" + load_humaneval()[0].texts[2] + "\n")
    curated = tmp_path / "curated"
    assert main(["curate", str(repo_dir), "--out", str(curated), "--workers", "1", "--no-licenses"]) == 0
    tok = tmp_path / "tok"
    assert main(["tokenizer", "train", str(curated), "--out", str(tok), "--vocab-size", "512"]) == 0
    out = tmp_path / "tokens"
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(
        "mixture:\n  name: code\n  components:\n"
        "    - {name: python, select: {language: Python}, weight: 3}\n"
        "    - {name: rest, weight: 1}\n"
    )
    assert (
        main(
            [
                "tokenize",
                str(curated),
                str(out),
                "--tokenizer",
                str(tok),
                "--shards",
                "2",
                "--max-tokens",
                "256",
                "--mixture",
                str(mixture),
            ]
        )
        == 0
    )
    report = json.loads((out / "tokenize.json").read_text())
    blend = json.loads((out / "blend.json").read_text())
    assert set(report["tokens_by_component"]) == {"python", "rest"}
    assert blend["components"]["python"]["weight"] == pytest.approx(0.75)
    assert sum(blend["weights"]) == pytest.approx(1.0)
    assert blend["data_path"].split()[1::2] == blend["prefixes"]
    check_blend_in_megatron(blend, tok)
    assert report["contaminated_by_benchmark"] == {"humaneval": 1}
    from codemill.shards import read_table

    contaminated = read_table(out / "contaminated").to_pylist()
    assert [r["path"] for r in contaminated] == ["src/pkg/solved.py"]
    assert contaminated[0]["drop_reason"] == "contaminated:humaneval:HumanEval/0"
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    total = 0
    assert all(name.split("/")[0] in ("python", "rest") for name in report["shards"])
    for name, info in report["shards"].items():
        dataset = IndexedDataset(str(out / "tokens" / name))
        assert len(dataset) == info["documents"]
        total += sum(len(dataset[i]) for i in range(len(dataset)))
    assert total == report["totals"]["tokens"]
    first = next(iter(report["shards"]))
    assert main(["trace", str(out / "tokens" / first), "0"]) == 0
    assert main(["tokenize", str(curated), str(tmp_path / "x"), "--tokenizer", str(tmp_path / "none")]) == 2


def check_blend_in_megatron(blend: dict, tokenizer_dir: Path) -> None:
    """megatron-core's BlendedMegatronDatasetBuilder builds a BlendedDataset from our blend."""
    from collections import OrderedDict

    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    tokenizer = load_tokenizer(tokenizer_dir)

    class MegatronView:  # what GPTDataset asks of a tokenizer
        eod = tokenizer.token_to_id(EOS)
        pad = tokenizer.token_to_id("<fim_pad>")
        vocab_size = tokenizer.get_vocab_size()
        unique_identifiers = OrderedDict({"class": "codemill-test"})

    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=32,
        blend=(blend["prefixes"], blend["weights"]),
        split="1,0,0",
        tokenizer=MegatronView(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [64, 0, 0], lambda: True, config).build()
    assert len(train) >= 64  # megatron adds a small surplus
    sample = train[0]["tokens"]
    assert len(sample) == 32 and int(sample.max()) < tokenizer.get_vocab_size()


# ---------------------------------------------------------------- mixtures
def test_mixture_spec_validation_and_selection() -> None:
    from codemill.records import FileRecord
    from codemill.tokenize.mixture import MixtureError, MixtureSpec

    spec = MixtureSpec.from_dict(
        {
            "name": "m",
            "permissive": True,
            "allow_no_license": True,
            "components": [
                {"name": "py", "select": {"language": "Python"}, "weight": 2},
                {"name": "web", "select": {"language": ["JavaScript", "CSS"]}, "weight": 1},
            ],
        }
    )
    record = FileRecord(swhid="s", path="a.py", repo="r", language="Python", license_type="permissive")
    assert spec.component_of(record) == "py"
    assert spec.component_of(FileRecord(swhid="s", path="a.js", repo="r", language="CSS")) == "web"  # no_license
    assert (
        spec.component_of(FileRecord(swhid="s", path="a.js", repo="r", language="CSS", license_type="non_permissive"))
        is None
    )
    assert spec.component_of(FileRecord(swhid="s", path="a.rs", repo="r", language="Rust")) is None
    bad = [
        ({"components": [{"name": "a", "weight": -1}]}, "weights must be >= 0"),
        ({"components": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}, "all weights are zero"),
        ({"components": [{"name": "a", "select": {"lang": "Python"}}]}, "unknown field"),
        ({"components": [{"name": "a", "wieght": 1}]}, "unknown mixture component setting"),
        ({"colour": "red"}, "unknown mixture setting"),
        ({"components": [{"name": "a/b"}]}, "names a folder"),
        ({"components": []}, "no components"),
    ]
    for values, message in bad:
        with pytest.raises((MixtureError, ValueError), match=message):
            MixtureSpec.from_dict(values)


def test_blend_weights_epoch_caps_and_empty_components() -> None:
    from codemill.tokenize.mixture import Component, MixtureError, MixtureSpec, blend

    spec = MixtureSpec(components=(Component("big", weight=1), Component("small", weight=1, max_epochs=2)))
    shards = {"big": {"/t/big/p0": 600, "/t/big/p1": 400}, "small": {"/t/small/p0": 100}}
    plain = blend(spec, shards)
    assert plain["weights"] == pytest.approx([0.3, 0.2, 0.5])
    capped = blend(spec, shards, train_tokens=1000)  # small may give at most 2 x 100 = 200 tokens
    assert capped["components"]["small"]["weight"] == pytest.approx(0.2)
    assert capped["components"]["big"]["weight"] == pytest.approx(0.8)
    assert capped["components"]["small"]["epochs_at_train_tokens"] == pytest.approx(2.0)
    with pytest.raises(MixtureError, match="selected no records"):
        blend(spec, {"big": shards["big"]})
    with pytest.raises(MixtureError, match="epoch caps allow only"):
        blend(MixtureSpec(components=(Component("small", max_epochs=1),)), {"small": shards["small"]}, 10_000)


def test_tokenize_is_deterministic_across_runs_and_workers(tmp_path: Path, repo_dir: Path, tokenizer_dir: Path) -> None:
    from codemill.pipelines.tokenize import run_tokenize
    from codemill.tokenize.config import TokenizeConfig

    curated = tmp_path / "curated"
    assert main(["curate", str(repo_dir), "--out", str(curated), "--workers", "1", "--no-licenses"]) == 0
    config = TokenizeConfig(decontam=None, documents=DocumentConfig(max_tokens=128), num_shards=3)
    first = run_tokenize(curated, tmp_path / "a", tokenizer_dir, config)
    run_tokenize(
        curated,
        tmp_path / "b",
        tokenizer_dir,
        config,
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    )
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "tokens").rglob("*") if p.is_file())
    assert len(files) == 3 * len(first.report["shards"]) and files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


class _MatcherNeverReady:
    """A matcher build that never reports itself done: every repository is planned before it is
    decontaminated, and settled (waiting for the build) only when its documents are assembled."""

    def __init__(self, config) -> None:
        self.config = config

    def done(self) -> bool:
        return False

    def result(self) -> None:
        from codemill.tokenize.decontam import warm_matcher

        warm_matcher(self.config)


def test_reading_by_repository_writes_the_same_bytes_as_the_shuffle(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch
) -> None:
    """A curation output is laid out by repository, so tokenize reads it shard by shard without a
    shuffle. Forcing the shuffle (in one process) must give the same shards, contaminated rows and
    counts as reading by repository in two worker processes (one element a shard) and in one
    process (every shard in one element) with every repository planned before the matcher is
    ready, including one whose only file is contaminated."""
    from codemill.pipelines import tokenize as stage
    from codemill.shards import read_table
    from codemill.tokenize import repo_planner
    from codemill.tokenize.config import TokenizeConfig
    from codemill.tokenize.mixture import MixtureSpec

    solution = load_humaneval()[0].texts[2]
    rows = [
        {"repo": f"org/repo-{i % 7}", "path": f"lib/{p.name}", "content": p.read_text()}
        for i, p in enumerate(CODE_FILES)
    ]
    rows += [
        {"repo": f"org/repo-{i}", "path": "README.md", "content": f"# Repository {i}\n\nNotes on usage of repo {i}.\n"}
        for i in range(7)
    ]
    rows.append({"repo": "org/repo-3", "path": "lib/solved.py", "content": "# copied\n" + solution})
    rows.append({"repo": "org/only-solved", "path": "NOTES.md", "content": "# kept for later\n\n" + solution})
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curated = tmp_path / "curated"
    assert main(["curate", str(source), "--out", str(curated), "--workers", "1", "--no-licenses", "--shards", "3"]) == 0
    mixture = MixtureSpec.from_dict(
        {"components": [{"name": "python", "select": {"language": "Python"}}, {"name": "rest"}]}
    )
    config = TokenizeConfig(documents=DocumentConfig(max_tokens=256), mixture=mixture, num_shards=3)
    shuffled = stage.run_tokenize(curated, tmp_path / "shuffled", tokenizer_dir, config, shuffle=True)
    direct = stage.run_tokenize(
        curated,
        tmp_path / "direct",
        tokenizer_dir,
        config,  # two worker processes
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    )
    monkeypatch.setattr(repo_planner, "matcher_in_background", lambda config: config and _MatcherNeverReady(config))
    tentative = stage.run_tokenize(curated, tmp_path / "tentative", tokenizer_dir, config)
    assert shuffled.report["input_read"] == "shuffled"
    assert direct.report["input_read"] == tentative.report["input_read"] == "by repository, no shuffle"
    assert len({name.split("/")[1] for name in direct.report["shards"]}) == 3  # every input shard made documents
    assert {name.split("/")[0] for name in direct.report["shards"]} == {"python", "rest"}
    assert shuffled.report["contaminated_by_benchmark"] == {"humaneval": 2}

    def written(out: Path) -> dict[Path, bytes]:
        return {
            p.relative_to(out): p.read_bytes()
            for p in out.rglob("*.*")
            if p.is_file() and p.parts[-2] != "tokenizer" and p.suffix != ".json"
        }

    expected = written(tmp_path / "shuffled")
    assert len(expected) > 3 * len(shuffled.report["shards"])
    for run in (direct, tentative):
        for key in ("totals", "shards", "contaminated_by_benchmark", "tokens_by_component"):
            assert run.report[key] == shuffled.report[key], key
        files = written(run.out_dir)
        assert sorted(files) == sorted(expected), run.out_dir
        for name, data in files.items():
            assert data == expected[name], (run.out_dir, name)
    assert sorted(r["path"] for r in read_table(tmp_path / "tentative" / "contaminated").to_pylist()) == [
        "NOTES.md",
        "lib/solved.py",
    ]


def test_an_input_shard_out_of_repository_order_is_refused(tmp_path: Path, tokenizer_dir: Path) -> None:
    """A shard whose marker promises the repository layout but whose rows break it is named, not
    tokenized into documents that differ from the shuffle's."""
    import pyarrow.parquet as pq

    from codemill.pipelines.tokenize import run_tokenize
    from codemill.tokenize.config import TokenizeConfig

    rows = [
        {"repo": f"org/r{i}", "path": f"m{j}.py", "content": CODE_FILES[i * 3 + j].read_text()}
        for i in range(6)
        for j in range(3)
    ]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curated = tmp_path / "curated"
    assert main(["curate", str(source), "--out", str(curated), "--workers", "1", "--no-licenses", "--shards", "1"]) == 0
    shard = next((curated / "data").glob("part-*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table.take(list(reversed(range(table.num_rows)))), shard)
    with pytest.raises(Exception, match="not sorted by repository"):
        run_tokenize(curated, tmp_path / "out", tokenizer_dir, TokenizeConfig(decontam=None, num_shards=1))
    assert not (tmp_path / "out" / "_SUCCESS.json").exists()
    assert not list((tmp_path / "out").rglob("*.bin"))


def test_shard_names_parse_back() -> None:
    from codemill.shards import parse_shard_name, shard_name

    assert all(parse_shard_name(f"/data/{shard_name(i, n)}") == (i, n) for n in (1, 4, 128) for i in range(n))
    assert parse_shard_name("/data/part-1-of-4.parquet") is None
    assert parse_shard_name("/data/notes.parquet") is None


def test_byte_length_tables_follow_the_tokenizer_not_its_id(tokenizer_dir: Path, tmp_path: Path) -> None:
    """A freed tokenizer's id may be reused by another: the table must be the new tokenizer's."""
    import gc

    from codemill.tokenize.documents import token_byte_lengths

    small_dir = tmp_path / "small"
    train_tokenizer(code_texts(), small_dir, TokenizerConfig(vocab_size=300))
    for _ in range(20):  # new objects until one takes a freed one's id
        small = load_tokenizer(small_dir)
        assert len(token_byte_lengths(small)) == small.get_vocab_size()
        del small
        gc.collect()
        large = load_tokenizer(tokenizer_dir)
        assert len(token_byte_lengths(large)) == large.get_vocab_size()
        del large
        gc.collect()
