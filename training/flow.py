"""Flow matching as Wan trains it.

``x_t = (1 - sigma) x0 + sigma * noise``, the model predicts ``noise - x0`` at timestep ``1000 sigma``.
Sigma is drawn uniformly or logit-normally, then shifted like the sampler's schedule
(``shift * s / (1 + (shift - 1) s)``). A timestep range ``[min, max)`` (one A14B expert) is honoured
exactly by drawing the distribution's quantile from the matching sub-interval, not by rejection.

Noise and sigma of a sample are a pure function of (seed, the sample's global stream index), so they
do not depend on the world size and a resumed run redraws the same ones.
"""

from __future__ import annotations

import hashlib

import torch

from holocine_model.sampler import NUM_TRAIN_TIMESTEPS

from .config import FlowConfig

_NORMAL = torch.distributions.Normal(0.0, 1.0)


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return sigma / (shift - (shift - 1) * sigma)


def sample_seed(seed: int, global_index: int) -> int:
    """A 64-bit generator seed for one sample, the same in every process and distinct for distinct pairs.

    Not Python's ``hash``: ``hash(-1) == hash(-2)`` in CPython, which gave validation samples -1 and -2
    (the first two) the same sigma and noise.
    """
    digest = hashlib.blake2b(f"{seed},{global_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class FlowMatching:
    def __init__(self, config: FlowConfig, seed: int) -> None:
        if config.sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"flow.sampling must be uniform or logit_normal, got {config.sampling!r}")
        if not 0 <= config.timestep_min < config.timestep_max <= NUM_TRAIN_TIMESTEPS:
            raise ValueError("need 0 <= flow.timestep_min < flow.timestep_max <= 1000")
        self.config = config
        self.seed = seed
        bounds = torch.tensor([config.timestep_min, config.timestep_max], dtype=torch.float64) / NUM_TRAIN_TIMESTEPS
        self.q_lo, self.q_hi = self._cdf(unshift_sigma(bounds, config.shift)).tolist()

    def _cdf(self, u: torch.Tensor) -> torch.Tensor:
        """Quantile of an unshifted sigma ``u`` under the sampling distribution."""
        if self.config.sampling == "uniform":
            return u
        logit = torch.logit(u.clamp(1e-12, 1 - 1e-12))
        return _NORMAL.cdf((logit - self.config.logit_mean) / self.config.logit_std)

    def _icdf(self, q: torch.Tensor) -> torch.Tensor:
        if self.config.sampling == "uniform":
            return q
        z = _NORMAL.icdf(q.clamp(1e-7, 1 - 1e-7))
        return torch.sigmoid(self.config.logit_mean + self.config.logit_std * z)

    def draw(self, global_index: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma scalar, noise of ``shape``) for one sample, on the CPU, fp32."""
        generator = torch.Generator().manual_seed(sample_seed(self.seed, global_index))
        q = self.q_lo + (self.q_hi - self.q_lo) * torch.rand((), generator=generator, dtype=torch.float64)
        sigma = shift_sigma(self._icdf(q), self.config.shift).float()
        return sigma, torch.randn(shape, generator=generator)

    def noised(self, latents: torch.Tensor, global_index: torch.Tensor):
        """x_t, timesteps [B] (of 1000) and the target ``noise - x0`` for a batch of clean latents."""
        draws = [self.draw(int(g), tuple(latents.shape[1:])) for g in global_index]
        sigma = torch.stack([s for s, _ in draws]).to(latents.device)
        noise = torch.stack([n for _, n in draws]).to(latents.device)
        s = sigma.view(-1, *([1] * (latents.ndim - 1)))
        x_t = (1 - s) * latents + s * noise
        return x_t, sigma * NUM_TRAIN_TIMESTEPS, noise - latents

