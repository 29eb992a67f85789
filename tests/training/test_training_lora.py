"""LoRA in one process and under FSDP2 (2 gloo processes): the exports hold the base weights plus the
trained adapters' delta, and load into a plain model."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from training_helpers import TINY_CONFIG, losses, rewind, train

from holocine_model import WanDiT, get_config, load_checkpoint, read_state_dict
from holocine_model.model import keeps_fp32
from training import checkpointing
from training.config import load_config
from training.export import export_checkpoint
from training.train import build_model, main

SETTINGS = ("optim.max_steps=2", "checkpoint.every=1", "validation.every=0",
            "lora.enabled=true", "lora.rank=4", "lora.alpha=8")
LORA_A = ".lora_A.default.weight"


def base_plus_delta(output: Path) -> dict[str, torch.Tensor]:
    """The run's initial DiT weights plus (alpha / rank) B A of the adapters in its last checkpoint."""
    config = load_config(output / "config.yaml")
    folder = checkpointing.latest(output / "checkpoints")
    # The checkpoint holds the adapters and no base weight.
    saved = [key for key in dcp.FileSystemReader(str(folder)).read_metadata().state_dict_metadata if key.startswith("model.")]
    assert saved and all(".lora_" in key for key in saved), saved
    model = build_model(config)
    checkpointing.load_trained(model, folder)
    trained = model.state_dict()
    torch.manual_seed(config.seed)
    expected = WanDiT(get_config("tiny")).state_dict()
    adapters = [name.removesuffix(LORA_A) for name in trained if name.endswith(LORA_A)]
    assert len(adapters) == 10 * get_config("tiny").num_layers  # q, k, v, o of both attentions, 2 FFN layers
    for module in adapters:
        b, a = trained[f"{module}.lora_B.default.weight"], trained[module + LORA_A]
        delta = config.lora.alpha / config.lora.rank * b @ a
        assert delta.abs().max() > 1e-4, f"{module} was not trained"
        expected[f"{module}.weight"] = expected[f"{module}.weight"] + delta
    return expected


def test_lora_runs_export_base_plus_delta_in_one_process_and_under_fsdp(shards, tmp_path):
    pattern = f"{shards}/shard-*.tar"
    main(["--config", str(TINY_CONFIG), f"output={tmp_path / 'one'}", f"data.shards=[{pattern}]", *SETTINGS,
          "data.batch_size=2"])
    train(tmp_path / "two", pattern, *SETTINGS, "data.batch_size=1", nproc=2)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert one.keys() == two.keys() == {1, 2}
    assert all(abs(one[step] - two[step]) <= 1e-5 * one[step] for step in one), (one, two)

    for output in (tmp_path / "one", tmp_path / "two"):
        expected = base_plus_delta(output)
        # The run's own export (of the model it trained) and training.export's (of its last checkpoint,
        # the base rebuilt): both are the initial weights plus the adapters' delta.
        for path in (output / "export" / "dit.safetensors", export_checkpoint(output)):
            model = WanDiT(get_config("tiny"))
            assert load_checkpoint(model, path) == ([], [])
            exported = model.state_dict()
            assert all(torch.allclose(exported[n], expected[n], atol=1e-6) for n in expected), path

    # In bf16 and in shards, as an A14B expert goes to the Hub: the parameters Wan computes in fp32 stay fp32.
    index = export_checkpoint(tmp_path / "two", out=tmp_path / "bf16" / "dit.safetensors", export_dtype="bfloat16",
                              export_shard_gb=2e-5)
    assert index.name == "dit.safetensors.index.json" and len(list(index.parent.glob("dit-*.safetensors"))) > 1
    saved = read_state_dict(index)
    assert saved.keys() == expected.keys()
    for name, weight in expected.items():
        assert saved[name].dtype == (torch.float32 if keeps_fp32(name) else torch.bfloat16), name
        torch.testing.assert_close(saved[name], weight.to(saved[name].dtype))

    # Resumed from its step-1 checkpoint (adapters and their AdamW state), the run takes step 2 again.
    resumed = rewind(tmp_path / "two", tmp_path / "resumed", 1)
    train(resumed, pattern, *SETTINGS, "data.batch_size=1", nproc=2, resume=True)
    assert abs(losses(resumed)[2] - two[2]) <= 1e-6 * two[2]


def test_a_frozen_base_in_bf16_trains_only_the_fp32_adapters():
    from training.lora import apply_lora, freeze_base_in_bf16

    config = load_config(TINY_CONFIG, [*SETTINGS])
    model = freeze_base_in_bf16(apply_lora(WanDiT(get_config("tiny")), config.lora))
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["blocks.0.self_attn.q.base_layer.weight"] == torch.bfloat16
    assert dtypes["blocks.0.self_attn.q" + LORA_A] == torch.float32
    # Wan's fp32 parameters stay fp32 (modulation, timestep MLPs, the affine cross-attention norm).
    assert dtypes["blocks.0.modulation"] == dtypes["time_embedding.0.weight"] == dtypes["blocks.0.norm3.weight"] == torch.float32
    latents, text = torch.randn(1, 4, 3, 8, 6), torch.randn(1, 10, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(latents, torch.tensor([500.0]), text).float().square().mean().backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None}
    assert trained and all(".lora_" in name for name in trained)
