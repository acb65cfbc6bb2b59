"""Export to and import from Hugging Face FalconH1: transformers loads our export and gives our logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codemill.training.export_hf import CheckpointError, export_hf, import_hf
from codemill.training.model import HybridLM, named_config


def _randomised(**overrides) -> HybridLM:
    torch.manual_seed(0)
    model = HybridLM(named_config("tiny", vocab_size=300, chunk_size=16, **overrides))
    model.reset_parameters(seed=3)
    with torch.no_grad():  # move everything off its neutral init so the comparison means something
        for name, param in model.named_parameters():
            if ".multiplier_" in name or name.endswith("norm.weight") or name.endswith(".D"):
                param.copy_(torch.rand_like(param) + 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "overrides",
    [
        dict(
            embedding_multiplier=5.65,
            lm_head_multiplier=0.04,
            key_multiplier=0.39,
            attention_out_multiplier=0.94,
            ssm_in_multiplier=1.25,
            ssm_out_multiplier=0.24,
            ssm_multipliers=(0.35, 0.25, 0.35, 0.5, 0.35),
            mlp_multipliers=(0.88, 0.59),
            learnable_multipliers=("scalar", "row", "col"),
        ),
        dict(ssm_norm=False),  # Falcon-H1-0.5B's plain silu gate
        dict(ssm_groups=2, ssm_norm_before_gate=True),
        dict(mixer="mamba"),
        dict(mixer="attention"),
    ],
    ids=["multipliers", "no-ssm-norm", "groups", "pure-mamba", "pure-attention"],
)
def test_transformers_loads_our_export_with_the_same_logits(tmp_path: Path, overrides: dict) -> None:
    from transformers import FalconH1ForCausalLM

    model = _randomised(**overrides)
    export_hf(model, tmp_path)
    theirs = FalconH1ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    tokens = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours_logits = model(tokens)
        their_logits = theirs(tokens).logits
    assert (ours_logits - their_logits).abs().max().item() < 1e-4


def test_import_a_falcon_h1_checkpoint(tmp_path: Path) -> None:
    model = _randomised(learnable_multipliers=("row",))
    export_hf(model, tmp_path)
    back = import_hf(tmp_path).eval()
    tokens = torch.randint(0, 300, (1, 33))
    with torch.no_grad():
        assert (back(tokens) - model(tokens)).abs().max().item() < 1e-5
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="expected 'falcon_h1'"):
        import_hf(tmp_path)
    with pytest.raises(CheckpointError, match="no config.json"):
        import_hf(tmp_path / "nowhere")
