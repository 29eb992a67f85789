"""The DiT against diffusers' WanTransformer3DModel, and its shot-aware behaviour."""

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from holocine_model import ShotLayout, WanDiT, get_config, load_checkpoint, offload

def diffusers_tiny(cfg):
    diffusers = pytest.importorskip("diffusers")  # a test dependency only
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, eps=cfg.eps,
    )
    # Random everything, norms and modulation tables included, so a swapped key cannot hide.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    cfg = get_config("tiny")
    ref = diffusers_tiny(cfg)
    path = tmp_path_factory.mktemp("diffusers")
    ref.save_pretrained(path)  # diffusers' own layout and file name
    model = WanDiT(cfg).eval()
    assert load_checkpoint(model, path) == ([], [])
    return ref, model


def inputs(batch=2, frames=3, height=8, width=6, text_len=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, frames, height, width, generator=g)
    text = torch.randn(batch, text_len, 24, generator=g)
    return latents, text


def test_matches_diffusers_in_fp32(oracle):
    ref, model = oracle
    latents, text = inputs()
    t = torch.tensor([999.0, 321.5])
    with torch.no_grad():
        expected = ref(latents, t, text, return_dict=False)[0]
        out = model(latents, t, text)
    assert out.shape == latents.shape
    assert rel_err(out, expected) < 1e-5


def test_matches_diffusers_with_per_token_timesteps(oracle):
    # Wan2.2 TI2V: the first latent frame (the conditioning image) at t = 0, the rest noisy.
    ref, model = oracle
    latents, text = inputs(frames=3)
    tokens_per_frame = 4 * 3
    t = torch.cat([torch.zeros(2, tokens_per_frame), torch.full((2, 2 * tokens_per_frame), 700.0)], dim=1)
    with torch.no_grad():
        expected = ref(latents, t, text, return_dict=False)[0]
        out = model(latents, t, text)
    assert rel_err(out, expected) < 1e-5


def test_single_shot_layout_and_dense_backend_match_diffusers(oracle):
    ref, model = oracle
    latents, text = inputs(batch=1)
    model.config.attention_backend = "dense"
    try:
        with torch.no_grad():
            out = model(latents, torch.tensor([500.0]), text, layout=ShotLayout.from_frames_per_shot([[3]]))
    finally:
        model.config.attention_backend = "auto"
    assert rel_err(out, ref(latents, torch.tensor([500.0]), text, return_dict=False)[0]) < 1e-5


def test_text_mask_zeroes_padding_states_like_wan(oracle):
    ref, model = oracle
    latents, text = inputs(batch=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    zeroed = text * mask[..., None]
    with torch.no_grad():
        torch.testing.assert_close(model(latents, torch.tensor([10.0]), text, mask), model(latents, torch.tensor([10.0]), zeroed))
        assert rel_err(model(latents, torch.tensor([10.0]), text, mask),
                       ref(latents, torch.tensor([10.0]), zeroed, return_dict=False)[0]) < 1e-5


def multi_shot_layout():
    # Batch of 2 with different layouts; text: global [0, 3), shots after it, padding to 16.
    return ShotLayout.from_frames_per_shot(
        [[1, 3, 2], [4, 2]], global_spans=[[0, 3], [0, 4]], shot_spans=[[[3, 6], [6, 8], [8, 11]], [[4, 9], [9, 12]]])


@pytest.mark.parametrize("compat", [False, True])
def test_backends_agree_in_the_full_model_with_grads(compat):
    cfg = get_config("tiny", holocine_compat=compat)
    torch.manual_seed(0)
    model = WanDiT(cfg).double()
    latents, text = (t.double() for t in inputs(frames=6, text_len=16))
    t = torch.tensor([900.0, 100.0])
    results = {}
    for backend in ("dense", "per_shot"):
        model.config.attention_backend = backend
        model.zero_grad()
        out = model(latents, t, text, layout=multi_shot_layout())
        out.square().mean().backward()
        results[backend] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["per_shot"][0], results["dense"][0])
    for a, b in zip(results["per_shot"][1], results["dense"][1]):
        torch.testing.assert_close(a, b)


def test_window_cross_attention_isolates_shots_in_one_block():
    # One block: self-attention runs before cross-attention, so a shot's tokens can only feel text
    # of their own window. Changing shot 1's caption must leave shot 0's frames untouched.
    cfg = get_config("tiny", num_layers=1)
    torch.manual_seed(0)
    model = WanDiT(cfg).eval()
    latents, text = inputs(batch=1, frames=4, text_len=12)
    layout = ShotLayout.from_frames_per_shot([[2, 2]], global_spans=[[0, 3]], shot_spans=[[[3, 6], [6, 9]]])
    edited = text.clone()
    edited[:, 6:9] += 1.0
    with torch.no_grad():
        a = model(latents, torch.tensor([500.0]), text, layout=layout)
        b = model(latents, torch.tensor([500.0]), edited, layout=layout)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2])
    assert not torch.allclose(a[:, :, 2:], b[:, :, 2:])


@pytest.mark.parametrize("compat", [False, True])
def test_padding_is_seen_only_in_compat_mode(compat):
    cfg = get_config("tiny", num_layers=1, holocine_compat=compat)
    torch.manual_seed(0)
    model = WanDiT(cfg).eval()
    latents, text = inputs(batch=1, frames=4, text_len=12)
    layout = ShotLayout.from_frames_per_shot([[2, 2]], global_spans=[[0, 3]], shot_spans=[[[3, 6], [6, 9]]])
    edited = text.clone()
    edited[:, 11] += 1.0  # a padding token (no text mask, so it reaches the embedding)
    with torch.no_grad():
        changed = not torch.allclose(model(latents, torch.tensor([500.0]), text, layout=layout),
                                     model(latents, torch.tensor([500.0]), edited, layout=layout))
    assert changed == compat


class CountAttentionKernels(TorchDispatchMode):
    """Counts fused SDPA forward kernel calls: the ones selective checkpointing keeps or recomputes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.calls += "scaled_dot_product" in name and "backward" not in name
        return func(*args, **(kwargs or {}))


def grads_and_recomputed_attention(model, latents, text, layout):
    model.zero_grad()
    loss = model(latents, torch.tensor([900.0, 100.0]), text, layout=layout).square().mean()
    with CountAttentionKernels() as counter:
        loss.backward()
    return [p.grad.clone() for p in model.parameters()], counter.calls


# multi_shot_layout() runs 5 self-attention kernels a block (one per shot, 3 + 2: the samples' layouts
# differ) and 5 cross-attention kernels (one per sample and shot). A fully checkpointed block recomputes
# all 10 in the backward pass, a selectively checkpointed one only the 5 cross-attention kernels.
@pytest.mark.parametrize(("selective_blocks", "recomputed"), [(0, 20), (1, 15), (2, 10)])
def test_checkpointing_gives_the_same_grads_and_selective_keeps_self_attention(selective_blocks, recomputed):
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = WanDiT(cfg).double()
    latents, text = (t.double() for t in inputs(frames=6, text_len=16))
    expected, none_recomputed = grads_and_recomputed_attention(model, latents, text, multi_shot_layout())
    model.enable_gradient_checkpointing(True, selective_blocks)
    grads, calls = grads_and_recomputed_attention(model, latents, text, multi_shot_layout())
    assert (none_recomputed, calls) == (0, recomputed)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


def test_offloaded_checkpoints_give_the_same_grads_and_offload_only_the_block_inputs(monkeypatch):
    torch.manual_seed(0)
    model = WanDiT(get_config("tiny")).double()
    latents, text = (t.double() for t in inputs(frames=6, text_len=16))
    model.enable_gradient_checkpointing(True, selective_blocks=1)
    expected, _ = grads_and_recomputed_attention(model, latents, text, multi_shot_layout())
    model.enable_gradient_checkpointing(True, selective_blocks=1, offload=True)
    grads, _ = grads_and_recomputed_attention(model, latents, text, multi_shot_layout())
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)

    # What is offloaded: per block its input x, the text context and t_mod; nothing the recomputation
    # saves in the backward pass.
    packed = []
    monkeypatch.setattr(offload, "_pack", lambda tensor: packed.append(tuple(tensor.shape)) or (tensor.device, tensor))
    grads_and_recomputed_attention(model, latents, text, multi_shot_layout())
    assert packed == [(2, 72, 32), (2, 16, 32), (2, 6, 32)] * len(model.blocks)


def test_offloaded_tensors_come_back_with_their_layout():
    # A padded, transposed view, as compiled blocks return them: same values, strides and offset.
    storage = torch.randn(6 * 12 + 3)
    saved = storage[3:].as_strided((6, 10), (1, 6))
    with offload.offload_saved_tensors():
        product = saved * torch.ones(6, 10, requires_grad=True)
    restored = product.grad_fn._saved_self
    assert restored.stride() == saved.stride() and restored.untyped_storage().data_ptr() != saved.untyped_storage().data_ptr()
    torch.testing.assert_close(restored, saved, rtol=0, atol=0)


def test_compiled_blocks_match_eager_under_checkpointing():
    # Attention runs eagerly inside compiled blocks (graph breaks); the recomputation of a
    # checkpointed block must run the compiled graphs its forward ran, or checkpointing fails on
    # mismatched saved tensors. Two grids and layouts: the second shape recompiles the blocks.
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = WanDiT(cfg)
    batches = [(*inputs(frames=6, text_len=16), multi_shot_layout()),
               (*inputs(frames=4, height=6, text_len=16, seed=1),
                ShotLayout.from_frames_per_shot([[2, 2], [1, 3]], [[0, 3], [0, 3]], [[[3, 6], [6, 9]], [[3, 8], [8, 12]]]))]
    expected = [grads_and_recomputed_attention(model, *batch)[0] for batch in batches]
    counters.clear()
    model.compile_blocks()
    model.enable_gradient_checkpointing(True, selective_blocks=1)
    try:
        for batch, reference in zip([*batches, batches[0]], [*expected, expected[0]]):
            model.zero_grad()
            model(batch[0], torch.tensor([900.0, 100.0]), batch[1], layout=batch[2]).square().mean().backward()
            for param, grad in zip(model.parameters(), reference):
                torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-6)
        assert counters["stats"]["unique_graphs"] >= 3  # the blocks did run compiled
    finally:
        torch._dynamo.reset()


def test_bf16_keeps_timestep_path_modulation_and_norms_in_fp32():
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = WanDiT(cfg).eval()
    latents, text = inputs(frames=6, text_len=16)
    t = torch.tensor([900.0, 100.0])
    with torch.no_grad():
        ref = model(latents, t, text, layout=multi_shot_layout())
        model.to_compute_dtype(torch.bfloat16)
        out = model(latents, t, text, layout=multi_shot_layout())
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["blocks.0.self_attn.q.weight"] == torch.bfloat16
    assert dtypes["blocks.0.modulation"] == dtypes["head.modulation"] == torch.float32
    assert dtypes["time_projection.1.weight"] == dtypes["blocks.1.norm3.weight"] == torch.float32
    assert out.dtype == torch.bfloat16
    assert rel_err(out.float(), ref) < 3e-2


def test_full_self_attention_switch_keeps_window_cross_attention():
    # HoloCine's "full attention" model: every token sees every shot, text stays windowed.
    torch.manual_seed(0)
    # One block, so a change can only travel along one self-attention hop.
    model = WanDiT(get_config("tiny", num_layers=1, sparse_self_attention=False)).eval()
    latents, text = inputs(batch=1, frames=4, text_len=12)
    layout = ShotLayout.from_frames_per_shot([[2, 2]], global_spans=[[0, 3]], shot_spans=[[[3, 6], [6, 9]]])
    with torch.no_grad():
        windowed = model(latents, torch.tensor([500.0]), text, layout=layout)
        full = model(latents, torch.tensor([500.0]), text, layout=layout.without_text_spans())
        model.config.sparse_self_attention = True
        sparse = model(latents, torch.tensor([500.0]), text, layout=layout)
    assert not torch.allclose(windowed, full) and not torch.allclose(windowed, sparse)
    # Shot 1's last frame sees shot 0's second frame only under full self-attention.
    latents2 = latents.clone()
    latents2[:, :, 1] += 1.0  # second frame of shot 0 (not a summary frame)
    model.config.sparse_self_attention = False
    with torch.no_grad():
        changed_full = not torch.allclose(model(latents2, torch.tensor([500.0]), text, layout=layout)[:, :, 3], windowed[:, :, 3])
        model.config.sparse_self_attention = True
        changed_sparse = not torch.allclose(model(latents2, torch.tensor([500.0]), text, layout=layout)[:, :, 3], sparse[:, :, 3])
    assert changed_full and not changed_sparse


def test_layout_frame_count_must_match_latents():
    model = WanDiT(get_config("tiny"))
    latents, text = inputs(batch=1, frames=3)
    with pytest.raises(ValueError, match="latent frames"):
        model(latents, torch.tensor([1.0]), text, layout=ShotLayout.from_frames_per_shot([[2, 2]]))


def test_presets_have_the_published_shapes():
    shapes = {
        "wan2.1-1.3b": (16, 1536, 8960, 12, 30),
        "wan2.2-5b": (48, 3072, 14336, 24, 30),
        "wan2.2-a14b": (16, 5120, 13824, 40, 40),
    }
    for name, shape in shapes.items():
        c = get_config(name)
        assert (c.in_channels, c.dim, c.ffn_dim, c.num_heads, c.num_layers) == shape
        assert c.head_dim == 128 and c.text_dim == 4096 and c.patch_size == (1, 2, 2)
    with pytest.raises(ValueError):
        dataclasses.replace(get_config("tiny"), attention_backend="nope")
