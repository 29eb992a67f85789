"""Flow-matching Euler sampler with Wan's timestep shift and classifier-free guidance.

Flow matching in Wan's convention: ``x_sigma = (1 - sigma) * x0 + sigma * noise``, the model predicts
the velocity ``noise - x0`` at timestep ``1000 * sigma``, and sampling integrates from sigma = 1 to 0.
Wan's shift ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)`` spends more steps at high noise.

Wan2.2 A14B is a mixture of two experts: ``model`` (high noise) runs the steps whose timestep is at or
above ``boundary * 1000`` and ``low_noise_model`` the rest, as Wan2.2 and HoloCine's pipeline switch
(HoloCine's ``switch_DiT_boundary`` is 0.875).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import ShotLayout

NUM_TRAIN_TIMESTEPS = 1000


def shifted_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """``num_steps + 1`` decreasing noise levels from 1 to 0, shifted as Wan does."""
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return (shift * sigmas / (1 + (shift - 1) * sigmas)).float()


@dataclass
class FlowEulerSampler:
    """Euler integration of the flow ODE; Wan's defaults are shift 5 (480p) and guidance 5."""

    num_steps: int = 50
    shift: float = 5.0
    guidance_scale: float = 5.0
    # A14B: timesteps (of 1000) below boundary * 1000 go to the low-noise expert.
    boundary: float = 0.875

    @torch.no_grad()
    def sample(
        self,
        model: torch.nn.Module,
        shape: tuple[int, ...],
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        layout: ShotLayout | None = None,
        negative_text_states: torch.Tensor | None = None,
        negative_text_mask: torch.Tensor | None = None,
        negative_layout: ShotLayout | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        low_noise_model: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """Sample latents of ``shape`` [B, C, F, H, W].

        Guidance runs when ``guidance_scale != 1`` and negative text states are given. The negative
        prompt has no shot captions, so by default it uses ``layout`` without text spans (full
        cross-attention, as HoloCine's pipeline does) with the same sparse self-attention.
        With ``low_noise_model`` (Wan2.2 A14B), steps below ``boundary`` run on it instead of ``model``.
        """
        device = torch.device(device) if device is not None else text_states.device
        generator = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        guided = negative_text_states is not None and self.guidance_scale != 1.0
        if guided and negative_layout is None and layout is not None:
            negative_layout = layout.without_text_spans()
        sigmas = shifted_sigmas(self.num_steps, self.shift).tolist()
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            timestep = sigma * NUM_TRAIN_TIMESTEPS
            low_noise = low_noise_model is not None and timestep < self.boundary * NUM_TRAIN_TIMESTEPS
            expert = low_noise_model if low_noise else model
            t = torch.full((shape[0],), timestep, device=device)
            v = expert(x.to(dtype), t, text_states, text_mask, layout).float()
            if guided:
                v_neg = expert(x.to(dtype), t, negative_text_states, negative_text_mask, negative_layout).float()
                v = v_neg + self.guidance_scale * (v - v_neg)
            x = x + (sigma_next - sigma) * v
        return x
