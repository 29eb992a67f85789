"""Checkpoint layouts: round trips, sharding, diffusers names, no unpickling."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from holocine_model import WanDiT, detect_layout, get_config, load_checkpoint, read_state_dict, save_checkpoint
from holocine_model.checkpoint import to_diffusers_keys, to_wan_keys


def random_model(seed: int) -> WanDiT:
    torch.manual_seed(seed)
    model = WanDiT(get_config("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("layout", ["wan", "diffusers"])
def test_round_trip_is_exact(tmp_path, layout):
    src = random_model(0)
    [path] = save_checkpoint(src, tmp_path / "model.safetensors", layout=layout)
    assert detect_layout(load_file(path)) == layout
    dst = random_model(1)
    assert load_checkpoint(dst, path) == ([], [])
    assert_same_weights(src, dst)


def test_diffusers_names_are_exactly_diffusers_own():
    diffusers = pytest.importorskip("diffusers")
    cfg = get_config("tiny")
    ref = diffusers.WanTransformer3DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, in_channels=cfg.in_channels,
        out_channels=cfg.out_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers, cross_attn_norm=True)
    ours = to_diffusers_keys(WanDiT(cfg).state_dict())
    theirs = ref.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    # diffusers' norm2 is the affine cross-attention norm, Wan's norm3.
    assert "blocks.0.norm2.weight" in ours and "blocks.0.norm3.weight" not in ours


def test_key_maps_are_inverse_and_strip_tool_prefixes():
    sd = random_model(0).state_dict()
    back = to_wan_keys(to_diffusers_keys(sd))
    assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    prefixed = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    assert to_wan_keys(prefixed).keys() == sd.keys()


def test_unknown_key_is_an_error():
    with pytest.raises(KeyError, match="unexpected"):
        to_diffusers_keys({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(1)})


@pytest.mark.parametrize("layout", ["wan", "diffusers"])
def test_sharded_save_and_load_through_index_json(tmp_path, layout):
    src = random_model(0)
    files = save_checkpoint(src, tmp_path / "diffusion_pytorch_model.safetensors", layout=layout, max_shard_bytes=20_000)
    shards = [f for f in files if f.suffix == ".safetensors"]
    index = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    assert len(shards) > 2 and files[-1] == index
    weight_map = json.loads(index.read_text())["weight_map"]
    assert set(weight_map.values()) == {f.name for f in shards}
    for source in (index, tmp_path):  # the index itself, or the directory holding it
        dst = random_model(1)
        load_checkpoint(dst, source)
        assert_same_weights(src, dst)


def test_missing_shard_tensor_is_reported(tmp_path):
    save_checkpoint(random_model(0), tmp_path / "m.safetensors", max_shard_bytes=20_000)
    index = tmp_path / "m.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["blocks.9.modulation"] = next(iter(data["weight_map"].values()))
    index.write_text(json.dumps(data))
    with pytest.raises(KeyError, match="missing"):
        read_state_dict(index)


def test_torch_files_load_weights_only_and_never_unpickle_objects(tmp_path):
    src = random_model(0)
    torch.save(src.state_dict(), tmp_path / "ok.pt")
    dst = random_model(1)
    load_checkpoint(dst, tmp_path / "ok.pt")
    assert_same_weights(src, dst)

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Payload()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(tmp_path / "evil.pt")


def test_bf16_checkpoint_loads_into_matching_model(tmp_path):
    src = random_model(0).to(torch.bfloat16)
    save_file({k: v.contiguous() for k, v in to_diffusers_keys(src.state_dict()).items()}, str(tmp_path / "w.safetensors"))
    dst = random_model(1).to(torch.bfloat16)
    load_checkpoint(dst, tmp_path)
    assert_same_weights(src, dst)


def test_mismatched_checkpoints_are_refused_or_loaded_in_part(tmp_path):
    src = random_model(0)
    state = src.state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.1.")}
    partial["blocks.0.extra.weight"] = torch.zeros(2)
    save_file(partial, str(tmp_path / "partial.safetensors"))
    dst = random_model(1)
    with pytest.raises(RuntimeError, match=r"missing \['blocks.1.*unexpected \['blocks.0.extra.weight'\]"):
        load_checkpoint(dst, tmp_path / "partial.safetensors")
    missing, unexpected = load_checkpoint(dst, tmp_path / "partial.safetensors", strict=False)
    assert missing == sorted(k for k in state if k.startswith("blocks.1.")) and unexpected == ["blocks.0.extra.weight"]
    loaded = dst.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in partial if k in state)
    assert not torch.equal(loaded["blocks.1.modulation"], state["blocks.1.modulation"])

    save_file({**state, "head.head.weight": torch.zeros(3, 3)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(RuntimeError, match=r"head.head.weight has shape \[3, 3\]"):
        load_checkpoint(random_model(1), tmp_path / "shape.safetensors")
