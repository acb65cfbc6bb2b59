"""Likelihood metrics that move early in training, before pass@k does (arXiv 2506.07731): the
conditional log-likelihood of a reference answer given its prompt, and bits per byte.

    loglik(task) = mean over problems of  sum_t log p(answer_t | prompt, answer_<t)
    bpb(task)    = - sum over problems and answer tokens of log2 p  /  UTF-8 bytes of the answers

Answers: HumanEval / MBPP canonical solutions after their prompts, GSM8K reference answers after
the question; plus BPB of held-out code (no prompt). Works with our HybridLM and with any
transformers causal LM (a `logits_of` function adapts each).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Pair:
    """A prompt and the answer whose likelihood is measured after it ('' prompt: plain BPB)."""

    prompt: str
    answer: str


LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # (1, length) token ids -> (1, length, vocab) logits


def logits_fn(model) -> LogitsFn:
    """Our HybridLM (under the precision its run trained with: `load_model` sets it), or a
    transformers model (whose output has .logits). Logits come back in float32."""
    precision = getattr(model, "precision", None)

    def run(tokens: torch.Tensor) -> torch.Tensor:
        with precision.autocast(tokens.device) if precision is not None else contextlib.nullcontext():
            out = model(tokens)
        return (out.logits if hasattr(out, "logits") else out).float()

    return run


@torch.no_grad()
def answer_logprob(
    run: LogitsFn, encode: Callable[[str], list[int]], pair: Pair, max_tokens: int, bos: int | None = None
) -> tuple[float, int]:
    """(sum of natural-log probabilities of the answer's tokens, answer bytes). The prompt and the
    answer are tokenised apart, so the answer's tokens are the same whatever precedes them; a
    sequence longer than max_tokens keeps its end (the whole answer when it fits)."""
    prompt_ids = ([bos] if bos is not None else []) + encode(pair.prompt)
    answer_ids = encode(pair.answer)
    if not answer_ids:
        return 0.0, 0
    ids = (prompt_ids + answer_ids)[-max_tokens:]
    answer_count = min(len(answer_ids), len(ids) - 1)  # the first token of the window has no context
    tokens = torch.tensor([ids], dtype=torch.long)
    logits = run(tokens[:, :-1]).float()
    logprobs = F.log_softmax(logits[0, -answer_count:], dim=-1)
    targets = tokens[0, -answer_count:]
    total = float(logprobs.gather(1, targets[:, None]).sum())
    # Bytes of the answer part that was scored (all of it unless the window cut its start).
    scored_text_bytes = len(pair.answer.encode("utf-8")) * answer_count / len(answer_ids)
    return total, int(round(scored_text_bytes))


def likelihood_metrics(
    run: LogitsFn,
    encode: Callable[[str], list[int]],
    pairs: Sequence[Pair],
    max_tokens: int = 2048,
    bos: int | None = None,
) -> dict[str, float]:
    """{'loglik': mean summed log-probability per answer, 'bpb': bits per byte over all answers}."""
    total_logprob, total_bytes, per_answer = 0.0, 0, []
    for pair in pairs:
        logprob, size = answer_logprob(run, encode, pair, max_tokens, bos)
        per_answer.append(logprob)
        total_logprob += logprob
        total_bytes += size
    return {
        "loglik": sum(per_answer) / max(1, len(per_answer)),
        "bpb": -total_logprob / math.log(2) / max(1, total_bytes),
        "answers": len(pairs),
    }
