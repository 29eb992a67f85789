"""Model configurations: the published Wan DiT sizes plus tiny ones for tests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ATTENTION_BACKENDS = ("auto", "dense", "per_shot", "flex", "flash")


@dataclass
class ModelConfig:
    """Hyper-parameters of a Wan2.1/2.2 text-to-video DiT.

    Defaults are Wan2.1 1.3B. ``sparse_self_attention``, ``attention_backend`` and ``holocine_compat``
    are runtime switches (they change no weights) and may be changed on ``model.config`` between calls.
    """

    in_channels: int = 16
    out_channels: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_max_len: int = 1024
    # False: full self-attention over all shots (HoloCine's "full attention" model) while
    # cross-attention stays windowed; True: sparse inter-shot self-attention.
    sparse_self_attention: bool = True
    # Self-attention implementation; every backend computes the same function (see attention.py).
    attention_backend: str = "auto"
    # Reproduce the released HoloCine attention quirks exactly (see attention.py for what they are).
    holocine_compat: bool = False

    def __post_init__(self) -> None:
        self.patch_size = tuple(self.patch_size)
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


PRESETS: dict[str, ModelConfig] = {
    "wan2.1-1.3b": ModelConfig(),
    # TI2V 5B: the 48-channel Wan2.2 VAE; trained with per-token timesteps.
    "wan2.2-5b": ModelConfig(in_channels=48, out_channels=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30),
    # One expert (high- or low-noise) of the Wan2.2 A14B mixture; same shape as Wan2.1 14B T2V.
    "wan2.2-a14b": ModelConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # Tiny models for CPU tests: a few thousand parameters, head_dim 16 so RoPE splits 8/4/4.
    "tiny": ModelConfig(in_channels=4, out_channels=4, dim=32, ffn_dim=64, num_heads=2, num_layers=2,
                        text_dim=24, freq_dim=16),
    "tiny-deep": ModelConfig(in_channels=4, out_channels=4, dim=64, ffn_dim=96, num_heads=4, num_layers=4,
                             text_dim=24, freq_dim=32),
}


def get_config(name: str, **overrides: object) -> ModelConfig:
    """Return a fresh copy of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
