"""Training samples from the tokenize stage's shards, through megatron-core's own datasets.

`codemill tokenize` writes Megatron .bin/.idx shards and a blend (weights per shard prefix). Here
megatron-core's BlendedMegatronDatasetBuilder turns that blend into a BlendedDataset of
GPTDatasets: documents packed end to end into samples of seq_len + 1 tokens, shuffled by a seed,
mixed by the blend's weights. Using Megatron's reader rather than our own guarantees the shards mean
to us what they mean to Megatron-LM, and gives its deterministic order for free: sample i is the
same on every run and every machine, so a run resumes by asking for the samples after the last
one it consumed, and data-parallel ranks take disjoint slices of each global batch.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections import OrderedDict

import numpy as np
import torch

from codemill.errors import UserError
from codemill.storage import StoragePath, cache_folder, is_remote, local_copy, location
from codemill.training.config import DataConfig  # noqa: F401 (re-exported)


class DataError(UserError):
    """Training data that cannot be used (names the path and the reason)."""


def _local_prefix(prefix: str) -> str:
    """megatron-core memory-maps .bin/.idx: shards on object storage are copied to a local cache
    first (once; again only when an object changed)."""
    if not is_remote(prefix):
        return prefix
    folder = cache_folder(prefix)
    for suffix in (".bin", ".idx"):
        local_copy(location(prefix + suffix), folder)
    return str(folder / location(prefix).name)


def _locate(path: StoragePath) -> tuple[dict, StoragePath]:
    """(blend, tokenizer directory) of a tokenize output or a blend.json inside one."""
    blend_file = path / "blend.json" if path.is_dir() else path
    if not blend_file.exists():
        raise DataError(f"{path}: no blend.json; give the output directory of `codemill tokenize` or its blend.json")
    try:
        blend = json.loads(blend_file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{blend_file} is not JSON ({err.msg})") from None
    if not blend.get("prefixes"):
        raise DataError(f"{blend_file} lists no shard prefixes")
    missing = [p for p in blend["prefixes"] if not (location(p + ".bin").exists() and location(p + ".idx").exists())]
    if missing:
        raise DataError(f"{blend_file}: shard(s) {missing[:3]} have no .bin/.idx (moved or deleted?)")
    blend["prefixes"] = [_local_prefix(p) for p in blend["prefixes"]]
    return blend, blend_file.parent / "tokenizer"


class PackedSamples:
    """`num_samples` samples of seq_len + 1 tokens; `batch(start, size)` gives (inputs, targets,
    loss mask) for samples start .. start + size - 1 as torch tensors."""

    def __init__(self, config: DataConfig, num_samples: int) -> None:
        from codemill.tokenize.tokenizer import EOS, FIM_PAD, load_tokenizer

        blend, tokenizer_dir = _locate(location(config.path))
        tokenizer = load_tokenizer(tokenizer_dir)
        self.vocab_size = tokenizer.get_vocab_size()
        with warnings.catch_warnings():  # megatron-core warns about Transformer Engine / Apex on import
            warnings.simplefilter("ignore")
            from megatron.core.datasets.blended_megatron_dataset_builder import (
                BlendedMegatronDatasetBuilder,
            )
            from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

        class TokenizerView:  # what GPTDataset asks of a tokenizer
            eod = tokenizer.token_to_id(EOS)
            pad = tokenizer.token_to_id(FIM_PAD)
            vocab_size = tokenizer.get_vocab_size()
            unique_identifiers = OrderedDict({"class": "codemill", "tokenizer": str(tokenizer_dir)})

        megatron_config = GPTDatasetConfig(
            random_seed=config.seed,
            sequence_length=config.seq_len,
            blend=(blend["prefixes"], blend["weights"]),
            split="1,0,0",
            tokenizer=TokenizerView(),
            reset_position_ids=False,
            reset_attention_mask=False,
            eod_mask_loss=False,
            path_to_cache=None,
            # The model masks causally itself; megatron-core would otherwise build a seq x seq mask
            # for every sample (216 ms a sample at sequence 8192) that nothing reads.
            create_attention_mask=False,
        )
        quiet = logging.getLogger("megatron")  # it reports index building (and not caching it) per dataset
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self.dataset, _, _ = BlendedMegatronDatasetBuilder(
                GPTDataset, [num_samples, 0, 0], lambda: True, megatron_config
            ).build()
        finally:
            quiet.setLevel(level)
        if self.dataset is None or len(self.dataset) < num_samples:
            raise DataError(
                f"{config.path}: megatron-core built {0 if self.dataset is None else len(self.dataset)} "
                f"samples, {num_samples} were asked for"
            )
        self.num_samples = num_samples

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if start + size > self.num_samples:
            raise IndexError(f"samples {start}..{start + size - 1} asked of {self.num_samples}")
        samples = [self.dataset[i] for i in range(start, start + size)]
        inputs = torch.from_numpy(np.stack([s["tokens"] for s in samples]).astype(np.int64))
        targets = torch.from_numpy(np.stack([s["labels"] for s in samples]).astype(np.int64))
        mask = torch.from_numpy(np.stack([s["loss_mask"] for s in samples]).astype(np.float32))
        return inputs, targets, mask
