"""Hugging Face FalconH1 checkpoints: export our model (config.json, model.safetensors, tokenizer) so
`transformers.FalconH1ForCausalLM` loads it, and import a FalconH1 checkpoint into our model.

Our names differ from transformers' (the model code reads better with short ones); the mapping is
the state-dict adapter below, in the torchtitan habit. Learnable multipliers are folded into the
weights; the muP multipliers map one to one onto FalconH1Config fields (the mixer's per-channel
`mup_vector` is rebuilt by transformers from `ssm_multipliers`).

FalconH1 layers always hold both mixers. A pure Mamba-2 or pure attention model is exported as a
hybrid whose missing mixer is a minimal one with a zero output projection: it adds exactly 0, so
the logits are unchanged (a FalconH1 checkpoint always imports as a hybrid).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from codemill.errors import UserError
from codemill.training.model import HybridLM, ModelConfig

WEIGHTS = "model.safetensors"

# Our parameter name -> transformers' (per layer: `layers.{i}.` -> `model.layers.{i}.`).
_LAYER_NAMES = {
    "norm.weight": "input_layernorm.weight",
    "ff_norm.weight": "pre_ff_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp.gate_proj.weight": "feed_forward.gate_proj.weight",
    "mlp.up_proj.weight": "feed_forward.up_proj.weight",
    "mlp.down_proj.weight": "feed_forward.down_proj.weight",
    **{
        f"mamba.{n}": f"mamba.{n}"
        for n in (
            "in_proj.weight",
            "conv1d.weight",
            "conv1d.bias",
            "dt_bias",
            "A_log",
            "D",
            "norm.weight",
            "out_proj.weight",
        )
    },
}
_TOP_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "final_norm.weight": "model.final_layernorm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

# The stand-in for a mixer the model does not have (FalconH1 needs one; its output is zeroed).
_STUB_ATTENTION: dict[str, Any] = dict(num_heads=1, num_kv_heads=1, head_dim=8)
_STUB_MAMBA: dict[str, Any] = dict(ssm_dim=8, ssm_heads=1, ssm_head_dim=8, ssm_state=8, ssm_groups=1, ssm_norm=False)


class CheckpointError(UserError):
    """A checkpoint that cannot be converted (names the file and the reason)."""


def to_hf_name(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    match = _LAYER.match(name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    raise CheckpointError(f"no FalconH1 name for parameter {name!r}")


def from_hf_name(name: str) -> str | None:
    """Our name for a transformers parameter; None for one we do not keep (rotary buffers)."""
    for ours, theirs in _TOP_NAMES.items():
        if name == theirs:
            return ours
    match = _HF_LAYER.match(name)
    if match:
        for ours, theirs in _LAYER_NAMES.items():
            if match.group(2) == theirs:
                return f"layers.{match.group(1)}.{ours}"
    return None


def hf_config(c: ModelConfig, special_ids: dict[str, int | None] | None = None):
    """The FalconH1Config of our config (the exported mixer shapes, multipliers and token ids)."""
    from transformers import FalconH1Config

    shape = c
    if not c.uses_attention:
        shape = replace(shape, mixer="hybrid", **_STUB_ATTENTION)
    if not c.uses_mamba:
        shape = replace(shape, mixer="hybrid", **_STUB_MAMBA)
    ids = special_ids or {}
    return FalconH1Config(  # type: ignore[call-arg]  # head_dim: a config attribute its stub lacks
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        rms_norm_eps=c.rms_eps,
        initializer_range=c.init_std,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        mamba_d_ssm=shape.ssm_dim,
        mamba_n_heads=shape.ssm_heads,
        mamba_d_head=shape.ssm_head_dim,
        mamba_n_groups=shape.ssm_groups,
        mamba_d_state=shape.ssm_state,
        mamba_d_conv=c.conv_width,
        mamba_chunk_size=c.chunk_size,
        mamba_conv_bias=True,
        mamba_proj_bias=False,
        mamba_rms_norm=shape.ssm_norm,
        mamba_norm_before_gate=c.ssm_norm_before_gate,
        time_step_limit=(c.dt_limit[0], c.dt_limit[1]),
        projectors_bias=False,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        embedding_multiplier=c.embedding_multiplier,
        lm_head_multiplier=c.lm_head_multiplier,
        key_multiplier=c.key_multiplier,
        attention_in_multiplier=c.attention_in_multiplier,
        attention_out_multiplier=c.attention_out_multiplier,
        ssm_in_multiplier=c.ssm_in_multiplier,
        ssm_out_multiplier=c.ssm_out_multiplier,
        ssm_multipliers=list(c.ssm_multipliers),
        mlp_multipliers=list(c.mlp_multipliers),
        bos_token_id=ids.get("bos"),
        eos_token_id=ids.get("eos"),
        pad_token_id=ids.get("pad"),
    )


def hf_state_dict(model: HybridLM) -> dict[str, torch.Tensor]:
    """transformers-named tensors of the model, multipliers folded (the model itself is untouched)."""
    c = model.config
    folded = HybridLM(c).to(next(model.parameters()).dtype)
    folded.load_state_dict(model.state_dict())
    folded.fold_multipliers()
    state = {to_hf_name(name): tensor.detach().contiguous().clone() for name, tensor in folded.state_dict().items()}
    from transformers import FalconH1ForCausalLM

    with torch.device("meta"):
        expected = FalconH1ForCausalLM(hf_config(c)).state_dict()
    dtype = next(iter(state.values())).dtype
    for name, tensor in expected.items():
        if name not in state:  # the missing mixer's stand-in: all zeros, so it adds exactly 0
            state[name] = torch.zeros(tensor.shape, dtype=dtype)
        elif state[name].shape != tensor.shape:
            raise CheckpointError(
                f"{name}: our shape {tuple(state[name].shape)} is not FalconH1's {tuple(tensor.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"parameters FalconH1 has no place for: {extra[:5]}")
    return state


def export_hf(model: HybridLM, out_dir: Path, tokenizer_path: Path | None = None) -> Path:
    """Write a FalconH1 checkpoint directory; returns it."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    special: dict[str, int | None] = {}
    if tokenizer_path is not None:
        from codemill.tokenize.tokenizer import (
            EOS,
            FIM_PAD,
            load_tokenizer,
            save_for_transformers,
        )

        tokenizer = load_tokenizer(Path(tokenizer_path))
        if tokenizer.get_vocab_size() > model.config.vocab_size:
            raise CheckpointError(
                f"tokenizer {tokenizer_path} has {tokenizer.get_vocab_size()} tokens but the model's "
                f"vocabulary is {model.config.vocab_size}"
            )
        save_for_transformers(tokenizer, out_dir)
        special = {
            "bos": tokenizer.token_to_id(EOS),
            "eos": tokenizer.token_to_id(EOS),
            "pad": tokenizer.token_to_id(FIM_PAD),
        }
    config = hf_config(model.config, special)
    config.architectures = ["FalconH1ForCausalLM"]
    config.save_pretrained(out_dir)
    save_file(hf_state_dict(model), str(out_dir / WEIGHTS), metadata={"format": "pt"})
    (out_dir / "codemill_config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    return out_dir


def _float(value) -> float:
    """transformers writes infinity in config.json as {"__float__": "Infinity"}."""
    if isinstance(value, dict) and "__float__" in value:
        return float(value["__float__"])
    return float(value)


def config_from_hf(hf: dict) -> ModelConfig:
    """Our config for a FalconH1 config.json (always a hybrid)."""
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 1e4))
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    ssm_dim = hf.get("mamba_d_ssm") or int(hf.get("mamba_expand", 2) * hf["hidden_size"])
    ssm_head_dim = hf.get("mamba_d_head")
    if ssm_head_dim in (None, "auto"):
        ssm_head_dim = ssm_dim // hf["mamba_n_heads"]
    limit = [_float(v) for v in (hf.get("time_step_limit") or (0.0, math.inf))]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        intermediate_size=hf["intermediate_size"],
        mixer="hybrid",
        rms_eps=hf.get("rms_norm_eps", 1e-5),
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=head_dim,
        rope_theta=float(theta),
        ssm_dim=ssm_dim,
        ssm_heads=hf["mamba_n_heads"],
        ssm_head_dim=ssm_head_dim,
        ssm_state=hf["mamba_d_state"],
        ssm_groups=hf.get("mamba_n_groups", 1),
        conv_width=hf.get("mamba_d_conv", 4),
        chunk_size=hf.get("mamba_chunk_size", 256),
        ssm_norm=bool(hf.get("mamba_rms_norm", False)),
        ssm_norm_before_gate=bool(hf.get("mamba_norm_before_gate", True)),
        dt_limit=(limit[0], limit[1]),
        embedding_multiplier=hf.get("embedding_multiplier", 1.0),
        lm_head_multiplier=hf.get("lm_head_multiplier", 1.0),
        key_multiplier=hf.get("key_multiplier", 1.0),
        attention_in_multiplier=hf.get("attention_in_multiplier", 1.0),
        attention_out_multiplier=hf.get("attention_out_multiplier", 1.0),
        ssm_in_multiplier=hf.get("ssm_in_multiplier", 1.0),
        ssm_out_multiplier=hf.get("ssm_out_multiplier", 1.0),
        ssm_multipliers=tuple(hf.get("ssm_multipliers") or (1.0,) * 5),
        mlp_multipliers=tuple(hf.get("mlp_multipliers") or (1.0, 1.0)),
    )


def import_hf(path: Path) -> HybridLM:
    """Our model from a FalconH1 checkpoint directory (config.json + *.safetensors)."""
    from safetensors.torch import load_file

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
    hf = json.loads(config_file.read_text())
    if hf.get("model_type") != "falcon_h1":
        raise CheckpointError(f"{config_file}: model_type is {hf.get('model_type')!r}, expected 'falcon_h1'")
    if hf.get("tie_word_embeddings"):
        raise CheckpointError(f"{config_file}: tied embeddings are not supported (our head is untied)")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} has no .safetensors weights")
    model = HybridLM(config_from_hf(hf))
    state: dict[str, torch.Tensor] = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            ours = from_hf_name(name)
            if ours is not None:
                state[ours] = tensor.float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if ".multiplier_" not in m]
    if missing:
        raise CheckpointError(f"{path}: weights missing for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return model
