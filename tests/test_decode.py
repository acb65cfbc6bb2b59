"""The fast decoder: the model's own function, step by step, for every mixer and multiplier layout."""

from __future__ import annotations

import pytest
import torch

from codemill.training.decode import Decoder
from codemill.training.model import HybridLM, named_config

VARIANTS = {
    "hybrid": {},
    "mamba only": {"mixer": "mamba"},
    "attention only": {"mixer": "attention"},
    "grouped B/C, norm before gate": {"ssm_groups": 2, "ssm_norm_before_gate": True},
    "no gated norm, dt limits": {"ssm_norm": False, "dt_limit": (0.01, 0.5)},
    "learnable multipliers (trained away from 1)": {"learnable_multipliers": ("scalar", "row", "col")},
    "Falcon-H1 muP multipliers": {
        "embedding_multiplier": 2.0,
        "key_multiplier": 0.5,
        "lm_head_multiplier": 0.3,
        "ssm_multipliers": (0.5, 1.5, 0.7, 1.2, 0.9),
        "mlp_multipliers": (0.8, 1.3),
    },
}


def _model(**overrides) -> HybridLM:
    model = HybridLM(named_config("tiny", vocab_size=97, chunk_size=8, **overrides))
    model.reset_parameters(seed=1)
    with torch.no_grad():  # move norms and multipliers away from 1 so a missed fold shows
        generator = torch.Generator().manual_seed(3)
        for name, param in model.named_parameters():
            if "multiplier_" in name or name.endswith("norm.weight"):
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_decoder_steps_equal_the_models_cached_steps(name: str) -> None:
    model = _model(**VARIANTS[name])
    tokens = torch.randint(0, 97, (3, 9), generator=torch.Generator().manual_seed(2))
    decoder = Decoder(model)
    with torch.no_grad():
        cache = model.new_cache()
        reference = model(tokens, cache)[:, -1]
        logits, state = decoder.start(model, tokens, max_new_tokens=12)
        torch.testing.assert_close(logits, reference)
        for step in range(12):
            token = reference.argmax(-1)
            reference = model.step(token, cache)
            logits = decoder.step(token, state)
            torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5, msg=f"step {step}")
    assert state.length == cache.length == 21


def test_decoder_state_is_bounded_and_says_so() -> None:
    model = _model()
    decoder = Decoder(model)
    with torch.no_grad():
        logits, state = decoder.start(model, torch.tensor([[1, 2, 3]]), max_new_tokens=1)
        decoder.step(logits.argmax(-1), state)
        with pytest.raises(ValueError, match="larger max_new_tokens"):
            decoder.step(logits.argmax(-1), state)


def test_decoder_is_a_snapshot_the_model_is_untouched() -> None:
    model = _model(learnable_multipliers=("row",))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Decoder(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
