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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from codemill.errors import UserError
from codemill.tokenize.tokenizer import (
    EOS,
    FILE_SEP,
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
    REPO_NAME,
)


@dataclass(frozen=True)
class DocumentConfig:
    seed: int = 0  # seed of the metadata and FIM draws (each repository's from it and its name)
    metadata_rate: float = 0.5  # share of documents that start with the repository name and file paths
    fim_rate: float = 0.5  # share of files turned into fill-in-the-middle
    fim_spm_rate: float = 0.5  # share of FIM files in suffix-prefix-middle order (else prefix-suffix-middle)
    max_tokens: int = 8192  # maximum document length in tokens

    def __post_init__(self) -> None:
        for name in ("metadata_rate", "fim_rate", "fim_spm_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"documents {name} must be between 0 and 1, got {getattr(self, name)}")
        if self.max_tokens < 64:
            raise UserError(f"documents max_tokens must be >= 64, got {self.max_tokens}")


class SourceText(NamedTuple):
    """What a document needs of a FileRecord. A NamedTuple, not a dataclass: it is what the
    tokenize stage shuffles, and a tuple pickles ~6x faster than a FileRecord."""

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

    @classmethod
    def of(
        cls,
        f: SourceText,
        token_start: int,
        content_start: int,
        token_end: int,
        char_start: int,
        char_end: int,
        fim: str,
    ) -> FileSpan:
        """The span of file `f` (its identity and licence) at these token and character offsets."""
        return cls(
            f.swhid,
            f.qualified_swhid,
            f.repo,
            f.path,
            f.license_spdx,
            f.license_type,
            token_start,
            content_start,
            token_end,
            char_start,
            char_end,
            fim,
        )


@dataclass
class Document:
    repo: str
    index: int  # within the repository
    tokens: np.ndarray
    spans: list[FileSpan] = field(default_factory=list)
    split_file: bool = False  # a piece of a file longer than one document


def special_ids(tokenizer) -> dict[str, int]:
    return {
        name: tokenizer.token_to_id(name) for name in (EOS, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME)
    }


def _fim_split(content: str, rng: random.Random) -> tuple[int, int]:
    a, b = sorted((rng.randint(0, len(content)), rng.randint(0, len(content))))
    return a, b


@dataclass
class RepositoryPlan:
    """Every draw for one repository and the text pieces to tokenise: the repository name, then
    per file its path line and its content parts (one, or prefix / middle / suffix for FIM)."""

    repo: str
    rng: random.Random  # continues into assembly (one metadata draw per document)
    files: list[tuple[SourceText, str, int, int]]  # (file, fim, index of its path piece, number of parts)
    pieces: list[str]


def plan_repository(repo: str, files: Sequence[SourceText], config: DocumentConfig) -> RepositoryPlan | None:
    """None when the repository has no non-empty file. Files in path order (then SWHIDs: the same
    repository name read from two sources may repeat a path, and the order must not depend on the
    order the files arrived in)."""
    rng = random.Random(f"{config.seed}\x00{repo}")
    files = sorted((f for f in files if f.content), key=lambda f: (f.path, f.swhid, f.qualified_swhid or ""))
    if not files:
        return None
    plan = RepositoryPlan(repo, rng, [], [repo])
    for f in files:
        fim = ""
        parts: tuple[str, ...]
        if len(f.content) >= 2 and rng.random() < config.fim_rate:
            fim = "spm" if rng.random() < config.fim_spm_rate else "psm"
            a, b = _fim_split(f.content, rng)
            parts = (f.content[:a], f.content[a:b], f.content[b:])  # prefix, middle, suffix
        else:
            parts = (f.content,)
        plan.files.append((f, fim, len(plan.pieces), len(parts)))
        plan.pieces.append(f.path + "\n")
        plan.pieces.extend(parts)
    return plan


def encode_pieces(tokenizer, pieces: Sequence[str]) -> list[np.ndarray]:
    """Ids of every piece, in one batch (encode_batch_fast runs in Rust threads, no offsets)."""
    return ids_of(_encodings(tokenizer, pieces))


def _encodings(tokenizer, pieces: Sequence[str]) -> list:
    if not pieces:
        return []
    return tokenizer.encode_batch_fast(list(pieces), add_special_tokens=False)


def ids_of(encodings: Sequence) -> list[np.ndarray]:
    """Token ids as arrays. This holds the GIL (a Python int per token, then the array: ~0.5 s per
    10M tokens), so `encode_plans` runs it outside the encoder's thread."""
    return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


def build_documents(repo: str, files: Sequence[SourceText], tokenizer, config: DocumentConfig) -> Iterator[Document]:
    """The documents of one repository (files in path order; empty files are skipped)."""
    plan = plan_repository(repo, files, config)
    if plan is not None:
        yield from assemble_documents(plan, encode_pieces(tokenizer, plan.pieces), tokenizer, config)


def encode_plans(
    tokenizer, plans: Iterable[RepositoryPlan], batch_chars: int = 4_000_000
) -> Iterator[tuple[RepositoryPlan, list[np.ndarray]]]:
    """Each plan with the ids of its pieces, in input order. Plans are pooled into batches of about
    `batch_chars` characters (one repository alone is too small to keep the encoder's threads
    busy), and the next batch encodes in a background thread while the caller works on the
    current one: the encoder releases the GIL, so planning, assembly and shard writing overlap it
    instead of leaving its cores idle."""

    def batches() -> Iterator[list[RepositoryPlan]]:
        batch: list[RepositoryPlan] = []
        size = 0
        # The first batches are smaller (1/8, 1/4, 1/2 of batch_chars), so the encoder starts
        # after an eighth of the reading and planning of a full batch.
        limit = max(1, batch_chars // 8)
        for plan in plans:
            batch.append(plan)
            size += sum(len(piece) for piece in plan.pieces)
            if size >= limit:
                yield batch
                batch, size = [], 0
                limit = min(batch_chars, 2 * limit)
        if batch:
            yield batch

    def split(batch: list[RepositoryPlan], encodings: list) -> Iterator[tuple[RepositoryPlan, list[np.ndarray]]]:
        at = 0
        for plan in batch:
            yield plan, ids_of(encodings[at : at + len(plan.pieces)])
            at += len(plan.pieces)

    # The encoder's thread runs only the Rust encoder (GIL released) and starts the next batch as
    # soon as one is done; turning ids into arrays, which holds the GIL, happens here in the
    # caller's thread, overlapping it. Done in the encoder's thread it kept the Rust threads waiting
    # for ~4.6 s of a 62M-token run.
    with ThreadPoolExecutor(1, thread_name_prefix="codemill-encode") as pool:
        pending = None
        for batch in batches():
            future = pool.submit(_encodings, tokenizer, [piece for plan in batch for piece in plan.pieces])
            if pending is not None:
                yield from split(pending[0], pending[1].result())
            pending = (batch, future)
        if pending is not None:
            yield from split(pending[0], pending[1].result())


def _file_body(fim: str | None, part_ids: list[np.ndarray], sp: dict) -> list[np.ndarray]:
    """A file's tokens as they go into a document: whole, or its FIM parts in PSM or SPM order."""
    if fim == "psm":
        prefix, middle, suffix = part_ids
        return [
            np.array([sp[FIM_PREFIX]]),
            prefix,
            np.array([sp[FIM_SUFFIX]]),
            suffix,
            np.array([sp[FIM_MIDDLE]]),
            middle,
        ]
    if fim == "spm":
        prefix, middle, suffix = part_ids
        return [np.array([sp[FIM_PREFIX], sp[FIM_SUFFIX]]), suffix, np.array([sp[FIM_MIDDLE]]), prefix, middle]
    return [part_ids[0]]


def assemble_documents(
    plan: RepositoryPlan, ids: list[np.ndarray], tokenizer, config: DocumentConfig
) -> Iterator[Document]:
    sp = special_ids(tokenizer)
    rng, repo = plan.rng, plan.repo
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

    for f, fim, at, count in plan.files:
        part_ids = ids[at + 1 : at + 1 + count]
        body = _file_body(fim, part_ids, sp)
        room = config.max_tokens - 1  # the closing <|endoftext|>
        for attempt in range(2):  # in the current document, else in a fresh one
            path_ids = ids[at] if metadata else ids[at][:0]
            segment_length = 1 + len(path_ids) + sum(len(b) for b in body)
            if length + segment_length <= room or attempt == 1 or not spans:
                break
            yield close()
            metadata = rng.random() < config.metadata_rate
            chunks, spans = header(metadata), []
            length = sum(len(c) for c in chunks)
        if length + segment_length <= room:
            start = length
            chunks += [np.array([sp[FILE_SEP]]), path_ids] + body
            length += segment_length
            spans.append(FileSpan.of(f, start, start + 1 + len(path_ids), length, 0, len(f.content), fim))
            continue
        # One file longer than a document: its parts in content order are a lossless tokenisation of
        # it (FIM is dropped); cut that into documents of their own.
        tokens = np.concatenate(part_ids)
        pieces = list(_split_file(f, tokens, tokenizer, config, sp, header(metadata), path_ids, repo, index))
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
        raise ValueError(
            f"max_tokens {config.max_tokens} leaves {budget} tokens of content after the repository "
            "name and path; raise documents max_tokens"
        )
    return budget


# id(tokenizer) -> (the tokenizer, its table). The tokenizer is kept with its table: an id alone
# can be reused by another tokenizer once the first is freed (seen: a 1,024-token tokenizer given a
# 512-token one's table). A worker keeps its tokenizer, so a few entries suffice.
_BYTE_LENGTHS: dict[int, tuple[object, np.ndarray]] = {}


def token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes of text each token stands for, for byte-level BPE (one vocabulary character per byte)."""
    entry = _BYTE_LENGTHS.get(id(tokenizer))
    if entry is None or entry[0] is not tokenizer:
        table = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
        for token, token_id in tokenizer.get_vocab(with_added_tokens=False).items():
            table[token_id] = len(token)
        if len(_BYTE_LENGTHS) >= 8:
            _BYTE_LENGTHS.pop(next(iter(_BYTE_LENGTHS)))
        entry = _BYTE_LENGTHS[id(tokenizer)] = (tokenizer, table)
    return entry[1]


def _cuts_by_bytes(content: str, tokens: np.ndarray, budget: int, tokenizer) -> list[tuple[int, int, int, int]] | None:
    """(token lo, token hi, char start, char end) per piece, from the tokens' byte lengths; a cut
    inside a multi-byte character moves back a token. None when the tokenizer is not byte-level
    (the byte lengths do not add up to the file)."""
    data = content.encode("utf-8", "surrogatepass")
    ends = np.cumsum(token_byte_lengths(tokenizer)[tokens])
    if len(ends) == 0 or ends[-1] != len(data):
        return None
    cuts, lo, char_at = [], 0, 0
    while lo < len(tokens):
        hi = min(lo + budget, len(tokens))
        while hi < len(tokens) and hi > lo + 1 and (data[ends[hi - 1]] & 0xC0) == 0x80:  # inside a character
            hi -= 1
        start_byte = ends[lo - 1] if lo else 0
        chars = len(data[start_byte : ends[hi - 1]].decode("utf-8", "surrogatepass"))
        cuts.append((lo, hi, char_at, char_at + chars))
        lo, char_at = hi, char_at + chars
    return cuts


def _cuts_by_decoding(f: SourceText, tokens: np.ndarray, budget: int, tokenizer) -> list[tuple[int, int, int, int]]:
    """The same for any tokenizer: decode each piece; a cut whose piece is not the next characters
    of the file (inside a character) moves back a token or three."""
    cuts, lo, char_at = [], 0, 0
    while lo < len(tokens):
        hi = min(lo + budget, len(tokens))
        for cut in range(hi, max(lo, hi - 4), -1):
            text = tokenizer.decode(tokens[lo:cut].tolist(), skip_special_tokens=False)
            if f.content.startswith(text, char_at):
                hi = cut
                break
        else:
            raise ValueError(f"{f.repo}/{f.path}: tokens {lo}..{hi} do not decode to the file's text")
        cuts.append((lo, hi, char_at, char_at + len(text)))
        lo, char_at = hi, char_at + len(text)
    return cuts


def _split_file(
    f: SourceText,
    tokens: np.ndarray,
    tokenizer,
    config: DocumentConfig,
    sp: dict,
    head: list[np.ndarray],
    path_ids: np.ndarray,
    repo: str,
    first_index: int,
) -> Iterator[Document]:
    """Pieces of at most the budget, each traced to the characters it holds."""
    budget = _piece_budget(config, head, path_ids)
    start = sum(len(c) for c in head)
    cuts = _cuts_by_bytes(f.content, tokens, budget, tokenizer) or _cuts_by_decoding(f, tokens, budget, tokenizer)
    for n, (lo, hi, char_start, char_end) in enumerate(cuts):
        chunks = head + [np.array([sp[FILE_SEP]]), path_ids, tokens[lo:hi], np.array([sp[EOS]])]
        content_start = start + 1 + len(path_ids)
        span = FileSpan.of(f, start, content_start, content_start + hi - lo, char_start, char_end, "")
        yield Document(repo, first_index + n, np.concatenate(chunks), [span], split_file=True)


def undo_fim(text: str) -> str:
    """The original content from one decoded FIM body (PSM or SPM)."""
    if text.startswith(FIM_PREFIX + FIM_SUFFIX):  # SPM: suffix, then prefix + middle
        suffix, rest = text[len(FIM_PREFIX + FIM_SUFFIX) :].split(FIM_MIDDLE, 1)
        return rest + suffix
    if text.startswith(FIM_PREFIX):
        prefix, rest = text[len(FIM_PREFIX) :].split(FIM_SUFFIX, 1)
        suffix, middle = rest.split(FIM_MIDDLE, 1)
        return prefix + middle + suffix
    return text
