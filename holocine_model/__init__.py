"""Wan2.1/2.2 DiT with HoloCine's window cross-attention and sparse inter-shot self-attention."""

from .attention import ShotLayout, ShotSelfAttention, WindowCrossAttention, shot_self_attention_bias, text_window_mask
from .checkpoint import (
    detect_layout,
    index_path,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    to_diffusers_keys,
    to_wan_keys,
)
from .config import ATTENTION_BACKENDS, PRESETS, ModelConfig, get_config
from .model import WanDiT
from .sampler import FlowEulerSampler, shifted_sigmas

__all__ = [
    "ATTENTION_BACKENDS",
    "FlowEulerSampler",
    "ModelConfig",
    "PRESETS",
    "ShotLayout",
    "ShotSelfAttention",
    "WanDiT",
    "WindowCrossAttention",
    "detect_layout",
    "get_config",
    "index_path",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
    "shifted_sigmas",
    "shot_self_attention_bias",
    "text_window_mask",
    "to_diffusers_keys",
    "to_wan_keys",
]
