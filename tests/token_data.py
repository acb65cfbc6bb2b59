"""A small tokenize-stage output built on the fly for the training tests: a BPE tokenizer trained on
standard-library modules, their repository documents in two Megatron shards, and the blend, laid
out as `codemill tokenize` lays them out (tokens/<component>/part-*, tokenizer/, blend.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codemill.tokenize.documents import DocumentConfig, SourceText, build_documents
from codemill.tokenize.indexed import write_shard
from codemill.tokenize.mixture import MixtureSpec, blend
from codemill.tokenize.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer

CODE_FILES = [p for p in sorted(Path(json.__file__).parent.parent.glob("*.py")) if 500 <= p.stat().st_size <= 20000]


def make_token_dataset(out: Path, vocab_size: int = 512, files: int = 120) -> Path:
    if (out / "blend.json").exists():
        return out
    texts = [(p.name, p.read_text()) for p in CODE_FILES[:files]]
    tokenizer_dir = out / "tokenizer"
    train_tokenizer([t for _, t in texts], tokenizer_dir, TokenizerConfig(vocab_size=vocab_size))
    tokenizer = load_tokenizer(tokenizer_dir)
    config = DocumentConfig(max_tokens=1024, seed=0)
    shard_docs: list[list] = [[], []]
    for number in range(0, len(texts), 10):  # repositories of ten modules
        repo = f"stdlib-{number // 10:02d}"
        sources = [
            SourceText(f"swh:1:cnt:{i:040x}", None, repo, name, text, "PSF-2.0", "permissive")
            for i, (name, text) in enumerate(texts[number : number + 10], start=number)
        ]
        shard_docs[(number // 10) % 2].extend(build_documents(repo, sources, tokenizer, config))
    shard_tokens = {}
    for index, docs in enumerate(shard_docs):
        prefix = out / "tokens" / "all" / f"part-{index:05d}-of-00002"
        info = write_shard(prefix, docs, np.uint16)
        shard_tokens[str(prefix)] = info.tokens
    (out / "blend.json").write_text(json.dumps(blend(MixtureSpec(), {"all": shard_tokens})))
    return out
