"""The hybrid model: configs, cached decoding, learnable multipliers, the Falcon-H1-0.5B shape."""

from __future__ import annotations

import pytest
import torch

from codemill.training.model import (
    ConfigError,
    HybridLM,
    ModelConfig,
    flops_per_token,
    named_config,
)


def _model(**overrides) -> HybridLM:
    torch.manual_seed(0)
    model = HybridLM(named_config("tiny", vocab_size=97, chunk_size=8, **overrides))
    model.reset_parameters(seed=1)
    return model.eval()


@pytest.mark.parametrize("mixer", ["hybrid", "mamba", "attention"])
def test_cached_step_by_step_logits_equal_the_full_forward(mixer: str) -> None:
    model = _model(mixer=mixer, embedding_multiplier=2.0, key_multiplier=0.5, ssm_multipliers=(0.5, 1.5, 0.7, 1.2, 0.9))
    tokens = torch.randint(0, 97, (2, 21), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache()
        prefill = model(tokens[:, :11], cache)  # a prompt, then one token at a time
        steps = [model.step(tokens[:, t], cache) for t in range(11, 21)]
    torch.testing.assert_close(prefill, full[:, :11], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 11:], rtol=1e-4, atol=1e-5)
    assert cache.length == 21


def test_gated_norm_variants_and_groups_run_and_differ() -> None:
    tokens = torch.randint(0, 97, (1, 12))
    outs = [
        _model(ssm_norm=norm, ssm_norm_before_gate=before, ssm_groups=2)(tokens)
        for norm, before in ((True, False), (True, True), (False, False))
    ]
    assert all(torch.isfinite(o).all() for o in outs)
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_learnable_multipliers_start_at_one_and_fold_into_the_weights() -> None:
    model = _model(learnable_multipliers=("scalar", "row", "col"))
    names = [n for n, _ in model.named_parameters() if ".multiplier_" in n]
    assert names and all(p.eq(1).all() for n, p in model.named_parameters() if n in names)
    plain = _model()
    tokens = torch.randint(0, 97, (2, 10))
    torch.testing.assert_close(model(tokens), plain(tokens))  # multipliers at 1 change nothing
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".multiplier_" in name:
                param.copy_(torch.rand_like(param) + 0.5)
    before = model(tokens)
    model.fold_multipliers()
    assert not [n for n, _ in model.named_parameters() if ".multiplier_" in n]
    torch.testing.assert_close(model(tokens), before, rtol=1e-5, atol=1e-5)


def test_inconsistent_configs_fail_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="ssm_heads x ssm_head_dim = 8 x 16 = 128, but ssm_dim is 256"):
        ModelConfig(ssm_head_dim=16)
    with pytest.raises(ConfigError, match="num_heads"):
        ModelConfig(num_heads=3, num_kv_heads=2)
    with pytest.raises(ConfigError, match="mixer"):
        ModelConfig(mixer="rwkv")
    with pytest.raises(ConfigError, match="unknown model config"):
        named_config("huge")
    with pytest.raises(ConfigError, match="unknown kind"):
        ModelConfig(learnable_multipliers=("diagonal",))
    ModelConfig(mixer="attention", ssm_head_dim=16)  # the mixer that is off is not checked


def test_falcon_h1_half_billion_shape_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = HybridLM(named_config("falcon-h1-0.5b"))
    total = model.num_parameters()
    assert 0.45e9 < total < 0.6e9, total
    c = model.config
    assert (c.num_layers, c.hidden_size, c.ssm_heads * c.ssm_head_dim, c.ssm_state) == (36, 1024, 1536, 128)
    assert flops_per_token(c, 4096) > 6 * total * 0.9


def test_small_config_size() -> None:
    with torch.device("meta"):
        model = HybridLM(named_config("small"))
    assert 20e6 < model.num_parameters() < 50e6


def test_a_model_built_on_meta_and_reset_equals_one_built_directly() -> None:
    """FSDP2's usual path: build on the meta device, `to_empty`, then `reset_parameters`. Every
    parameter and buffer (the muP scales included) and the logits equal a direct build's."""
    config = named_config("tiny", vocab_size=97, learnable_multipliers=("scalar", "row", "col"))
    direct = HybridLM(config)
    direct.reset_parameters(seed=7)
    with torch.device("meta"):
        lazy = HybridLM(config)
    assert all(p.is_meta for p in lazy.parameters())
    lazy.to_empty(device="cpu")
    lazy.reset_parameters(seed=7)
    mine, theirs = dict(lazy.named_buffers()), dict(direct.named_buffers())
    assert mine.keys() == theirs.keys() and any(name.endswith(".scale") for name in mine)
    for name, value in theirs.items():
        assert torch.equal(mine[name], value), name
    for (name, a), (_, b) in zip(lazy.named_parameters(), direct.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    tokens = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(lazy(tokens), direct(tokens))
