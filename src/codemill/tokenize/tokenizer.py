"""Byte-level BPE code tokenizer (HF tokenizers) with the StarCoder2 special tokens.

Saved as a transformers tokenizer folder (tokenizer.json + tokenizer_config.json), so
`transformers.AutoTokenizer.from_pretrained(folder)` loads it; any existing tokenizer.json (or a
folder holding one) can be used instead of training, provided it has the special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from codemill.errors import MissingInputError, UserError
from codemill.progress import enabled as progress_enabled
from codemill.storage import RemotePath, StoragePath, location, staged_dir

EOS = "<|endoftext|>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"
REPO_NAME, FILE_SEP = "<repo_name>", "<file_sep>"
SPECIAL_TOKENS = (EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP)


class TokenizerError(UserError):
    """A tokenizer that cannot serve (missing file, missing special tokens)."""


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 8192
    min_frequency: int = 2

    def __post_init__(self) -> None:
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise UserError(
                f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (the 256 bytes and the "
                f"special tokens), got {self.vocab_size}"
            )


def kept_texts(curated: StoragePath | str, max_files: int) -> Iterator[str]:
    """The non-empty texts of the first `max_files` kept records of a curation or dedup output: what
    the tokenizer is trained on (`codemill tokenizer train` and the run's tokenizer stage)."""
    from codemill.shards import iter_rows

    for count, row in enumerate(iter_rows(location(curated) / "data", columns=["content"])):
        if count >= max_files:
            return
        if row["content"]:
            yield row["content"]


def train_tokenizer(
    texts: Iterable[str], out_dir: StoragePath | str, config: TokenizerConfig = TokenizerConfig()
) -> StoragePath:
    """Train on `texts` and save to out_dir; returns the path of tokenizer.json. Digits are split one
    by one and the rest pre-tokenised by the GPT-2 byte-level pattern, as StarCoder's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress_enabled(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return save_for_transformers(tokenizer, location(out_dir))


def train_tokenizer_on(
    curated: StoragePath | str, out_dir: StoragePath | str, config: TokenizerConfig, max_files: int
) -> StoragePath:
    """The tokenizer trained on a curation or dedup output's first `max_files` kept texts (what
    `codemill tokenizer train` and the run's tokenizer stage both do); refuses an input that is not
    one, or that holds no kept text."""
    import itertools

    data = location(curated) / "data"
    if not data.is_dir():
        raise MissingInputError(f"{data} does not exist: give a curation or dedup output")
    texts = kept_texts(curated, max_files)
    first = next(texts, None)
    if first is None:
        raise UserError(f"{curated} holds no kept records: nothing to train on")
    return train_tokenizer(itertools.chain([first], texts), out_dir, config)


def save_for_transformers(tokenizer, out_dir: StoragePath) -> StoragePath:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        bos_token=EOS,
        unk_token=EOS,
        pad_token=FIM_PAD,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    if isinstance(out_dir, RemotePath):
        with staged_dir(out_dir) as local:  # each file uploaded whole
            wrapped.save_pretrained(str(local))
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        wrapped.save_pretrained(str(out_dir))
    return out_dir / "tokenizer.json"


def load_tokenizer(path: StoragePath | str):
    """A tokenizers.Tokenizer from tokenizer.json or a folder holding it; checks the special tokens."""
    from tokenizers import Tokenizer

    path = location(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.exists():
        raise TokenizerError(f"no tokenizer at {path} (expected tokenizer.json or a folder holding it)")
    try:
        tokenizer = (
            Tokenizer.from_str(file.read_text()) if isinstance(file, RemotePath) else Tokenizer.from_file(str(file))
        )
    except Exception as err:  # tokenizers raises a bare Exception on a malformed file
        raise TokenizerError(f"{file} is not a tokenizers file: {err}") from None
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise TokenizerError(
            f"tokenizer {file} lacks the special tokens {missing}; codemill's documents need "
            f"all of {list(SPECIAL_TOKENS)}"
        )
    # A file that contains "<|endoftext|>" or "<fim_prefix>" as text must stay text: only the document
    # builder places special tokens.
    tokenizer.encode_special_tokens = True
    return tokenizer
