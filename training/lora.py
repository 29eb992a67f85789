"""LoRA on the DiT's linear layers through peft, and merging adapters into plain weights for export."""

from __future__ import annotations

import re

import torch

from holocine_model import WanDiT
from holocine_model.model import keeps_fp32

from .config import LoRAConfig

_LORA_KEY = re.compile(r"^(.*)\.lora_([AB])\.default\.weight$")


def apply_lora(model: WanDiT, config: LoRAConfig) -> WanDiT:
    """Inject adapters into the blocks' linear layers; only the adapters stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    # Suffixes such as "q" or "ffn.0" match the blocks' attention projections and FFN layers.
    targets = "|".join(re.escape(name) for name in config.target_modules)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=rf"^blocks\.\d+\.(self_attn\.|cross_attn\.)?({targets})$")
    model = inject_adapter_in_model(lora, model)
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    return model


def freeze_base_in_bf16(model: WanDiT) -> WanDiT:
    """Store the frozen base weights in bf16: they get no gradient, so no fp32 master copy is needed.

    Halves the base's memory (an A14B expert: 28 GB instead of 56 GB before FSDP2 shards it). The
    adapters stay fp32 for AdamW, and so do the parameters Wan computes in fp32 (``FP32_PARAMETERS``).
    """
    for name, param in model.named_parameters():
        if not param.requires_grad and not keeps_fp32(name):
            param.data = param.data.bfloat16()
    return model


def merge_lora(state_dict: dict[str, torch.Tensor], config: LoRAConfig) -> dict[str, torch.Tensor]:
    """A full state dict with adapters folded in: ``W + (alpha / r) B A`` in fp32, keys back to the base names."""
    scale = config.alpha / config.rank
    factors: dict[str, dict[str, torch.Tensor]] = {}
    out = {}
    for name, tensor in state_dict.items():
        match = _LORA_KEY.match(name)
        if match:
            factors.setdefault(match.group(1), {})[match.group(2)] = tensor
        else:
            out[name.replace(".base_layer.", ".")] = tensor
    for module, ab in factors.items():
        weight = out[f"{module}.weight"]
        delta = (ab["B"].float() @ ab["A"].float()) * scale
        out[f"{module}.weight"] = weight.float() + delta  # fp32: a bf16 base would round small deltas away
    return out
