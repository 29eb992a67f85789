"""Flow matching, configs, LoRA merging and the umT5 key mapping."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
import torch

from holocine_model import PRESETS, ShotLayout, WanDiT, get_config
from training.config import FlowConfig, LoRAConfig, config_from_dict, config_to_dict, load_config
from training.encoders import wan_t5_to_transformers
from training.flow import FlowMatching, shift_sigma, unshift_sigma
from training.lora import apply_lora, merge_lora
from training.train import build_model, lr_lambda, parse_args

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.yaml"))


def sigmas(flow: FlowMatching, n: int = 2000) -> torch.Tensor:
    return torch.stack([flow.draw(g, (1,))[0] for g in range(n)])


def test_shift_inverts():
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(unshift_sigma(shift_sigma(s, 5.0), 5.0), s)


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_expert_timestep_ranges_are_exact(sampling):
    high = sigmas(FlowMatching(FlowConfig(sampling=sampling, shift=5.0, timestep_min=875), seed=0))
    low = sigmas(FlowMatching(FlowConfig(sampling=sampling, shift=5.0, timestep_max=875), seed=0))
    assert high.min() >= 0.875 and high.max() <= 1.0
    assert low.max() < 0.875 and low.min() >= 0.0
    # Not collapsed onto a boundary: each expert covers its range.
    assert high.max() - high.min() > 0.1 and low.max() - low.min() > 0.7


def test_sigma_distributions_follow_the_shift():
    uniform = sigmas(FlowMatching(FlowConfig(sampling="uniform", shift=3.0), seed=0), 4000)
    # P(sigma' <= shift(0.5)) = 0.5 for the shifted uniform.
    assert abs((uniform <= shift_sigma(torch.tensor(0.5), 3.0)).float().mean() - 0.5) < 0.03
    logit = sigmas(FlowMatching(FlowConfig(sampling="logit_normal", shift=1.0, logit_std=0.5), seed=0), 4000)
    assert abs(logit.median() - 0.5) < 0.03 and logit.std() < uniform.std()


def test_noising_is_wan_flow_matching_and_a_function_of_the_sample():
    flow = FlowMatching(FlowConfig(shift=5.0), seed=7)
    x0 = torch.randn(2, 4, 3, 2, 2)
    x_t, t, target = flow.noised(x0, torch.tensor([5, 9]))
    sigma, noise = flow.draw(9, (4, 3, 2, 2))
    assert torch.allclose(x_t[1], (1 - sigma) * x0[1] + sigma * noise)
    assert torch.allclose(target[1], noise - x0[1]) and t[1] == pytest.approx(1000 * float(sigma))
    again = flow.noised(x0[1:], torch.tensor([9]))
    assert torch.equal(again[0][0], x_t[1])


def test_every_sample_index_draws_its_own_noise_validation_included():
    # Validation uses indices -1, -2, ...: CPython's hash(-1) == hash(-2) once gave the first two the same draw.
    flow = FlowMatching(FlowConfig(shift=5.0), seed=0)
    draws = {g: flow.draw(g, (8,)) for g in range(-20, 20)}
    assert len({float(sigma) for sigma, _ in draws.values()}) == len(draws)
    assert not torch.equal(draws[-1][1], draws[-2][1])
    assert not torch.equal(FlowMatching(FlowConfig(shift=5.0), seed=1).draw(-1, (8,))[1], draws[-1][1])


def test_lr_schedule_warms_up_then_decays():
    from training.config import OptimConfig

    cosine = lr_lambda(OptimConfig(warmup_steps=4, schedule="cosine", max_steps=14))
    assert [cosine(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine(9) == pytest.approx(0.5) and cosine(14) == pytest.approx(0.0)
    assert lr_lambda(OptimConfig(warmup_steps=0, schedule="constant"))(100) == 1.0


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_parse_and_name_real_presets(path):
    config = load_config(path)
    assert config.model.preset in PRESETS
    frames, height, width = config.data.bucket
    assert frames % 4 == 1 and height % 16 == 0 and width % 16 == 0
    assert config_from_dict(config_to_dict(config)) == config


def test_config_overrides_and_unknown_keys():
    config = load_config(None, ["optim.lr=2e-4", "data.bucket=[33,64,64]", "model.overrides.num_layers=3"])
    assert config.optim.lr == 2e-4 and config.data.bucket == (33, 64, 64) and config.model.overrides == {"num_layers": 3}
    with pytest.raises(KeyError, match="learning_rate"):
        load_config(None, ["optim.learning_rate=1"])


def test_flags_and_overrides_may_be_interleaved():
    args = parse_args(["--resume", "optim.max_steps=80", "--config", "c.yaml", "output=o", "--ray-workers", "2",
                       "seed=1"])
    assert args.resume and args.config == "c.yaml" and args.ray_workers == 2
    assert args.overrides == ["optim.max_steps=80", "output=o", "seed=1"]


@pytest.mark.parametrize("module", ["training.train", "training.cache", "training.export"])
def test_every_command_line_flag_says_what_it_does_and_its_default(module):
    parser = importlib.import_module(module).build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 20, action.dest
        assert "default" in action.help or action.required, (action.dest, action.help)


def test_checkpointing_options_reach_the_model():
    model = build_model(load_config(None, ["model.preset=tiny", "model.selective_checkpoint_blocks=1"]))
    assert model.gradient_checkpointing and model.selective_checkpoint_blocks == 1 and not model.offload_checkpoints
    assert build_model(load_config(None, ["model.preset=tiny", "model.offload_checkpoints=true"])).offload_checkpoints
    assert not build_model(load_config(None, ["model.preset=tiny", "model.gradient_checkpointing=false"])).gradient_checkpointing
    with pytest.raises(ValueError, match="selective_blocks"):
        build_model(load_config(None, ["model.preset=tiny", "model.selective_checkpoint_blocks=-1"]))


def test_merged_lora_export_computes_what_the_adapted_model_computes():
    torch.manual_seed(0)
    config = LoRAConfig(enabled=True, rank=4, alpha=8.0)
    model = apply_lora(WanDiT(get_config("tiny")), config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert any(".self_attn.q.lora_A" in n for n in trainable) and any(".ffn.2.lora_B" in n for n in trainable)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # peft starts B at zero; make the adapters matter
    merged = WanDiT(get_config("tiny"))
    merged.load_state_dict(merge_lora(model.state_dict(), config), strict=True)
    x, t, text = torch.randn(1, 4, 3, 4, 4), torch.tensor([300.0]), torch.randn(1, 6, 24)
    layout = ShotLayout.from_frames_per_shot([[2, 1]], [[0, 2]], [[[2, 4], [4, 6]]])
    with torch.no_grad():
        assert torch.allclose(model(x, t, text, None, layout), merged(x, t, text, None, layout), atol=1e-5)


def test_wan_t5_names_map_onto_umt5():
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    hf = UMT5EncoderModel(UMT5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2,
                                     relative_attention_num_buckets=8, feed_forward_proj="gated-gelu")).eval()
    # Wan's T5Encoder state dict of the same weights, by Wan's names.
    inverse = {"layer.0.SelfAttention.q": "attn.q", "layer.0.SelfAttention.k": "attn.k",
               "layer.0.SelfAttention.v": "attn.v", "layer.0.SelfAttention.o": "attn.o",
               "layer.0.SelfAttention.relative_attention_bias": "pos_embedding.embedding",
               "layer.0.layer_norm": "norm1", "layer.1.layer_norm": "norm2",
               "layer.1.DenseReluDense.wi_0": "ffn.gate.0", "layer.1.DenseReluDense.wi_1": "ffn.fc1",
               "layer.1.DenseReluDense.wo": "ffn.fc2"}
    wan = {"token_embedding.weight": hf.shared.weight, "norm.weight": hf.encoder.final_layer_norm.weight}
    for name, tensor in hf.state_dict().items():
        if name.startswith("encoder.block."):
            _, _, index, rest = name.removesuffix(".weight").split(".", 3)
            wan[f"blocks.{index}.{inverse[rest]}.weight"] = tensor
    converted = wan_t5_to_transformers(wan)
    assert converted.keys() == hf.state_dict().keys()
    fresh = UMT5EncoderModel(hf.config).eval()
    fresh.load_state_dict(converted)
    ids = torch.randint(0, 50, (1, 7))
    assert torch.equal(fresh(input_ids=ids).last_hidden_state, hf(input_ids=ids).last_hidden_state)
