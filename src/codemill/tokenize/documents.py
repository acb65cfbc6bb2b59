"""Repository-context documents in the StarCoder2 format, with FIM, and the trace of every file.

    <repo_name>name<file_sep>path\\ncontent<file_sep>path\\ncontent ... <|endoftext|>

Metadata (the repository name and the paths) is included with probability `metadata_rate` per
document, otherwise `<file_sep>content<file_sep>content ... <|endoftext|>`. Files come in path
order. Each file is turned into a FIM example with probability `fim_rate`, split at two character
positions drawn uniformly, as PSM (`<fim_prefix>pre<fim_suffix>suf<fim_middle>mid`) or, with
probability `fim_spm_rate`, SPM (`<fim_prefix><fim_suffix>suf<fim_middle>pre mid`). Every draw
comes from a generator seeded by (seed, repository), so a run is reproducible and independent of
how repositories are spread over workers.

A document is closed before the file that would take it past `max_tokens`; a file that alone is
longer is cut at token boundaries into documents of its own (no FIM), and every piece is traced to
the characters it holds. Text pieces are tokenised separately (never across a special token), so
undoing FIM gives back the file exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from codemill.tokenize.tokenizer import EOS, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME


@dataclass(frozen=True)
class DocumentConfig:
    seed: int = 0
    metadata_rate: float = 0.5
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.5
    max_tokens: int = 8192

    def __post_init__(self) -> None:
        for name in ("metadata_rate", "fim_rate", "fim_spm_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"documents {name} must be between 0 and 1, got {getattr(self, name)}")
        if self.max_tokens < 64:
            raise ValueError(f"documents max_tokens must be >= 64, got {self.max_tokens}")


@dataclass(frozen=True)
class SourceText:
    """What a document needs of a FileRecord."""

    swhid: str
    qualified_swhid: str | None
    repo: str
    path: str
    content: str
    license_spdx: str | None
    license_type: str


@dataclass(frozen=True)
class FileSpan:
    """One file (or a piece of one) inside a document; token offsets are within the document."""

    swhid: str
    qualified_swhid: str | None
    repo: str
    path: str
    license_spdx: str | None
    license_type: str
    token_start: int  # the file's <file_sep>
    content_token_start: int  # first token of the content (after the path, if any)
    token_end: int
    char_start: int  # the characters of the content this span holds
    char_end: int
    fim: str  # "", "psm" or "spm"


@dataclass
class Document:
    repo: str
    index: int  # within the repository
    tokens: np.ndarray
    spans: list[FileSpan] = field(default_factory=list)
    split_file: bool = False  # a piece of a file longer than one document


class _Encoder:
    """Batches text pieces through the tokenizer (encode_batch runs in Rust threads)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.special = {name: tokenizer.token_to_id(name) for name in (EOS, FILE_SEP, FIM_MIDDLE, FIM_PREFIX,
                                                                      FIM_SUFFIX, REPO_NAME)}

    def encode(self, texts: Sequence[str]):
        """Ids only (encode_batch_fast skips the character offsets)."""
        return self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False) if texts else []

    def encode_with_offsets(self, text: str):
        return self.tokenizer.encode(text, add_special_tokens=False)


def _fim_split(content: str, rng: random.Random) -> tuple[int, int]:
    a, b = sorted((rng.randint(0, len(content)), rng.randint(0, len(content))))
    return a, b


def build_documents(repo: str, files: Sequence[SourceText], tokenizer, config: DocumentConfig,
                    encoder: _Encoder | None = None) -> Iterator[Document]:
    """The documents of one repository (files in path order; empty files are skipped)."""
    encoder = encoder or _Encoder(tokenizer)
    sp = encoder.special
    rng = random.Random(f"{config.seed}\x00{repo}")
    files = sorted((f for f in files if f.content), key=lambda f: f.path)
    if not files:
        return
    # Draw every decision first, then encode all pieces of the repository in one batch.
    plans = []
    pieces: list[str] = [repo]
    for f in files:
        fim = ""
        if len(f.content) >= 2 and rng.random() < config.fim_rate:
            fim = "spm" if rng.random() < config.fim_spm_rate else "psm"
            a, b = _fim_split(f.content, rng)
            parts = (f.content[:a], f.content[a:b], f.content[b:])  # prefix, middle, suffix
        else:
            parts = (f.content,)
        plans.append((f, fim, len(pieces), parts))
        pieces.append(f.path + "\n")
        pieces.extend(parts)
    encoded = encoder.encode(pieces)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encoded]
    repo_ids = ids[0]

    def header(metadata: bool) -> list[np.ndarray]:
        return [np.array([sp[REPO_NAME]]), repo_ids] if metadata else []

    index = 0
    metadata = rng.random() < config.metadata_rate
    chunks: list[np.ndarray] = header(metadata)
    length = sum(len(c) for c in chunks)
    spans: list[FileSpan] = []

    def close() -> Document:
        nonlocal index
        doc = Document(repo, index, np.concatenate(chunks + [np.array([sp[EOS]])]), list(spans))
        index += 1
        return doc

    for f, fim, at, parts in plans:
        path_ids = ids[at] if metadata else ids[at][:0]
        part_ids = ids[at + 1: at + 1 + len(parts)]
        if fim == "psm":
            prefix, middle, suffix = part_ids
            body = [np.array([sp[FIM_PREFIX]]), prefix, np.array([sp[FIM_SUFFIX]]), suffix,
                    np.array([sp[FIM_MIDDLE]]), middle]
        elif fim == "spm":
            prefix, middle, suffix = part_ids
            body = [np.array([sp[FIM_PREFIX], sp[FIM_SUFFIX]]), suffix, np.array([sp[FIM_MIDDLE]]), prefix, middle]
        else:
            body = [part_ids[0]]
        segment_length = 1 + len(path_ids) + sum(len(b) for b in body)
        room = config.max_tokens - 1  # the closing <|endoftext|>
        if length + segment_length > room and spans:
            yield close()
            metadata = rng.random() < config.metadata_rate
            path_ids = ids[at] if metadata else ids[at][:0]
            chunks, spans = header(metadata), []
            length = sum(len(c) for c in chunks)
            segment_length = 1 + len(path_ids) + sum(len(b) for b in body)
        if length + segment_length <= room:
            start = length
            chunks += [np.array([sp[FILE_SEP]]), path_ids] + body
            length += segment_length
            spans.append(FileSpan(f.swhid, f.qualified_swhid, f.repo, f.path, f.license_spdx, f.license_type,
                                  start, start + 1 + len(path_ids), length, 0, len(f.content), fim))
            continue
        # One file longer than a document: cut it (plainly tokenised, with offsets) into pieces.
        pieces = list(_split_file(f, config, encoder, header(metadata), path_ids, repo, index))
        yield from pieces
        index += len(pieces)
        metadata = rng.random() < config.metadata_rate
        chunks, spans = header(metadata), []
        length = sum(len(c) for c in chunks)
    if spans:
        yield close()


def _piece_budget(config: DocumentConfig, head: list[np.ndarray], path_ids: np.ndarray) -> int:
    budget = config.max_tokens - 2 - sum(len(c) for c in head) - len(path_ids)  # <file_sep> and <|endoftext|>
    if budget < 16:
        raise ValueError(f"max_tokens {config.max_tokens} leaves {budget} tokens of content after the repository "
                         "name and path; raise documents max_tokens")
    return budget


def _split_file(f: SourceText, config: DocumentConfig, encoder: _Encoder, head: list[np.ndarray],
                path_ids: np.ndarray, repo: str, first_index: int) -> Iterator[Document]:
    sp = encoder.special
    encoding = encoder.encode_with_offsets(f.content)
    tokens = np.asarray(encoding.ids, dtype=np.int64)
    offsets = encoding.offsets
    budget = _piece_budget(config, head, path_ids)
    for n, lo in enumerate(range(0, len(tokens), budget)):
        hi = min(lo + budget, len(tokens))
        start = sum(len(c) for c in head)
        chunks = head + [np.array([sp[FILE_SEP]]), path_ids, tokens[lo:hi], np.array([sp[EOS]])]
        char_end = len(f.content) if hi == len(tokens) else offsets[hi][0]
        span = FileSpan(f.swhid, f.qualified_swhid, f.repo, f.path, f.license_spdx, f.license_type, start,
                        start + 1 + len(path_ids), start + 1 + len(path_ids) + hi - lo, offsets[lo][0], char_end, "")
        yield Document(repo, first_index + n, np.concatenate(chunks), [span], split_file=True)


def undo_fim(text: str) -> str:
    """The original content from one decoded FIM body (PSM or SPM)."""
    if text.startswith(FIM_PREFIX + FIM_SUFFIX):  # SPM: suffix, then prefix + middle
        suffix, rest = text[len(FIM_PREFIX + FIM_SUFFIX):].split(FIM_MIDDLE, 1)
        return rest + suffix
    if text.startswith(FIM_PREFIX):
        prefix, rest = text[len(FIM_PREFIX):].split(FIM_SUFFIX, 1)
        suffix, middle = rest.split(FIM_MIDDLE, 1)
        return prefix + middle + suffix
    return text
