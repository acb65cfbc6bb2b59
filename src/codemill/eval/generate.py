"""Sampling completions: our model through its cached decoding (one prefill, then one step per
token with the KV cache and the conv/SSM states, through `training.decode.Decoder`), or any
transformers causal LM through
`generate`, behind one function.

The n samples of a prompt decode together as one batch (same prompt, so no padding: a padded
prefix would leak into the Mamba states). Each prompt's sampling generator is seeded by
(seed, prompt index), so a run is reproducible and independent of the order prompts are done in.
Generation stops per sample at a stop sequence, the end-of-text token or max_new_tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from codemill.errors import UserError
from codemill.progress import bar
from codemill.training.decode import Decoder


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError("need n >= 1, max_new_tokens >= 1, temperature >= 0 and 0 < top_p <= 1")


def sample_next(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    """Next token per row of logits (batch, vocab): greedy, or temperature + nucleus sampling."""
    if config.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < config.top_p  # the smallest set reaching top_p
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@dataclass
class TextCodec:
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    eos: int | None


def codec_for(tokenizer) -> TextCodec:
    """A tokenizers.Tokenizer (ours) or a transformers tokenizer."""
    from codemill.tokenize.tokenizer import EOS

    if hasattr(tokenizer, "token_to_id"):
        return TextCodec(
            lambda t: tokenizer.encode(t, add_special_tokens=False).ids,
            lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
            tokenizer.token_to_id(EOS),
        )
    return TextCodec(
        lambda t: tokenizer.encode(t, add_special_tokens=False),
        lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
        tokenizer.eos_token_id,
    )


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=-1)
    return (text, False) if cut == -1 else (text[:cut], True)


@torch.inference_mode()
def generate_ours(
    model,
    codec: TextCodec,
    prompts: Sequence[str],
    stops: Sequence[str],
    config: SamplingConfig,
    progress: bool = False,
) -> list[list[str]]:
    """Per prompt, n completions (text after the prompt, cut at the first stop sequence)."""
    out = []
    iterator = bar(prompts, desc="generate", unit="prompt", disable=not progress)
    decoder = Decoder(model)
    precision = getattr(model, "precision", None)  # the run's training precision (`load_model`)
    autocast = precision.autocast(torch.device("cpu")) if precision is not None else contextlib.nullcontext()
    for index, prompt in enumerate(iterator):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + index)
        ids = torch.tensor([codec.encode(prompt)] * config.n, dtype=torch.long)
        with autocast:
            logits, state = decoder.start(model, ids, config.max_new_tokens)
        produced: list[list[int]] = [[] for _ in range(config.n)]
        done = [False] * config.n
        for _ in range(config.max_new_tokens):
            token = sample_next(logits, config, generator)
            for row, value in enumerate(token.tolist()):
                if done[row]:
                    continue
                if codec.eos is not None and value == codec.eos:
                    done[row] = True
                    continue
                produced[row].append(value)
                if stops and _cut(codec.decode(produced[row][-64:]), stops)[1]:
                    done[row] = True
            if all(done):
                break
            with autocast:
                logits = decoder.step(token, state)
        out.append([_cut(codec.decode(p), stops)[0] for p in produced])
    return out


@torch.no_grad()
def generate_transformers(
    model, tokenizer, prompts: Sequence[str], stops: Sequence[str], config: SamplingConfig, progress: bool = False
) -> list[list[str]]:
    """The same interface over a transformers model (its own `generate` with the cache)."""
    out = []
    for index, prompt in enumerate(prompts):
        torch.manual_seed(config.seed * 1_000_003 + index)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        greedy = config.temperature == 0  # n greedy samples are one sample n times (transformers refuses n > 1)
        kwargs = dict(
            max_new_tokens=config.max_new_tokens,
            num_return_sequences=1 if greedy else config.n,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            stop_strings=list(stops) or None,
            tokenizer=tokenizer,
        )
        if config.temperature > 0:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
        else:
            kwargs.update(do_sample=False)
        generated = model.generate(ids, **kwargs)
        # Special tokens stay in the text, as in our decoding, so stop sequences such as <file_sep>
        # cut the same way; the end-of-text token ends a sample.
        texts = tokenizer.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=False)
        ends = tuple(stops) + ((tokenizer.eos_token,) if tokenizer.eos_token else ())
        out.append([_cut(t, ends)[0] for t in texts] * (config.n if greedy else 1))
    return out


def load_generator(path: Path):
    """(generate function bound to the model, description) for a run/checkpoint dir of ours or a
    transformers model directory."""
    path = Path(path)
    if (path / "config.json").exists() and json_model_type(path / "config.json"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        return (
            lambda prompts, stops, config, progress=False: generate_transformers(
                model, tokenizer, prompts, stops, config, progress
            )
        ), f"transformers {path}"
    from codemill.tokenize.tokenizer import load_tokenizer
    from codemill.training.loop import load_model, tokenizer_dir_of

    model = load_model(path)
    codec = codec_for(load_tokenizer(tokenizer_dir_of(path)))
    return (
        lambda prompts, stops, config, progress=False: generate_ours(model, codec, prompts, stops, config, progress)
    ), f"codemill {path}"


def json_model_type(config_file: Path) -> str | None:
    import json

    return json.loads(config_file.read_text()).get("model_type")
