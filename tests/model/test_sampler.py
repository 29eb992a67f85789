"""Flow-matching Euler sampler."""

import pytest
import torch

from holocine_model import FlowEulerSampler, ShotLayout, WanDiT, get_config, shifted_sigmas


def test_shifted_sigmas_follow_wan_shift():
    sigmas = shifted_sigmas(4, shift=5.0)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    # sigma = 0.5 shifted by 5: 2.5 / 3
    assert sigmas[2].item() == pytest.approx(2.5 / 3)


class ExactVelocity(torch.nn.Module):
    """Predicts the true flow velocity toward a fixed x0: v = (x - x0) / sigma."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0
        self.calls = []

    def forward(self, x, t, text_states, text_mask=None, layout=None):
        self.calls.append((t.clone(), text_states, layout))
        sigma = (t / 1000).view(-1, 1, 1, 1, 1)
        return (x - self.x0) / sigma


def test_euler_with_exact_velocity_lands_on_x0():
    x0 = torch.randn(1, 4, 2, 4, 4)
    model = ExactVelocity(x0)
    out = FlowEulerSampler(num_steps=7, shift=3.0).sample(model, x0.shape, torch.zeros(1, 5, 8))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)
    assert [c[0].item() for c in model.calls] == pytest.approx((shifted_sigmas(7, 3.0)[:-1] * 1000).tolist())


def test_guidance_combines_conditional_and_negative_predictions():
    x0 = torch.randn(1, 4, 2, 4, 4)

    class Biased(ExactVelocity):
        def forward(self, x, t, text_states, text_mask=None, layout=None):
            return super().forward(x, t, text_states, text_mask, layout) + text_states.mean()

    cond, neg = torch.full((1, 3, 8), 0.1), torch.zeros(1, 3, 8)
    model = Biased(x0)
    layout = ShotLayout.from_frames_per_shot([[1, 1]], [[0, 1]], [[[1, 2], [2, 3]]])
    out = FlowEulerSampler(num_steps=4, shift=1.0, guidance_scale=3.0).sample(
        model, x0.shape, cond, layout=layout, negative_text_states=neg)
    # v = v_neg + 3 (v_cond - v_neg) adds b = 3 * 0.1 to the exact velocity. The exact part scales
    # the error by sigma_next / sigma each step, so only the last step's (sigma 0.25 -> 0) survives.
    torch.testing.assert_close(out, x0 - 0.3 * 0.25, atol=1e-5, rtol=1e-5)
    negative_layouts = [c[2] for c in model.calls if c[1] is neg]
    assert len(negative_layouts) == 4 and all(not lay.has_text_spans for lay in negative_layouts)
    assert torch.equal(negative_layouts[0].shot_ids, layout.shot_ids)


def test_tiny_model_sampling_with_cfg_is_deterministic_per_seed():
    torch.manual_seed(0)
    model = WanDiT(get_config("tiny")).eval()
    layout = ShotLayout.from_frames_per_shot([[1, 2]], [[0, 2]], [[[2, 4], [4, 6]]])
    text, neg = torch.randn(1, 8, 24), torch.randn(1, 8, 24)
    sampler = FlowEulerSampler(num_steps=3, guidance_scale=4.0)
    kwargs = dict(layout=layout, negative_text_states=neg)
    a = sampler.sample(model, (1, 4, 3, 4, 4), text, seed=1, **kwargs)
    b = sampler.sample(model, (1, 4, 3, 4, 4), text, seed=1, **kwargs)
    c = sampler.sample(model, (1, 4, 3, 4, 4), text, seed=2, **kwargs)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    unguided = FlowEulerSampler(num_steps=3, guidance_scale=1.0).sample(model, (1, 4, 3, 4, 4), text, seed=1, **kwargs)
    assert not torch.allclose(a, unguided)


def test_a14b_experts_switch_at_the_boundary():
    """High-noise expert for timesteps >= boundary * 1000, low-noise below (Wan2.2 A14B, HoloCine's 0.875)."""
    x0 = torch.randn(1, 4, 2, 4, 4)
    high, low = ExactVelocity(x0), ExactVelocity(x0)
    sampler = FlowEulerSampler(num_steps=10, shift=5.0, guidance_scale=1.0, boundary=0.875)
    out = sampler.sample(high, x0.shape, torch.zeros(1, 5, 8), low_noise_model=low)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)
    timesteps = (shifted_sigmas(10, 5.0)[:-1] * 1000).tolist()
    assert [c[0].item() for c in high.calls] == pytest.approx([t for t in timesteps if t >= 875])
    assert [c[0].item() for c in low.calls] == pytest.approx([t for t in timesteps if t < 875])
    assert high.calls and low.calls
