"""LoRA in one process and under FSDP2 (2 gloo processes): the exports hold the base weights plus the
trained adapters' delta, and load into a plain model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from training_helpers import TINY_CONFIG, losses, train

from holocine_model import WanDiT, get_config, load_checkpoint
from training import checkpointing
from training.config import load_config
from training.export import export_checkpoint
from training.train import build_model, main

SETTINGS = ("optim.max_steps=2", "checkpoint.every=2", "validation.every=0",
            "lora.enabled=true", "lora.rank=4", "lora.alpha=8")
LORA_A = ".lora_A.default.weight"


def base_plus_delta(output: Path) -> dict[str, torch.Tensor]:
    """The run's initial DiT weights plus (alpha / rank) B A of the adapters in its last checkpoint."""
    config = load_config(output / "config.yaml")
    state = {"model": get_model_state_dict(build_model(config))}
    checkpointing.load_model_only(state, checkpointing.latest(output / "checkpoints"))
    trained = state["model"]
    torch.manual_seed(config.seed)  # the trainer builds its model after this seed
    expected = WanDiT(get_config("tiny")).state_dict()
    frozen = {name.replace(".base_layer.", "."): value for name, value in trained.items() if ".lora_" not in name}
    assert frozen.keys() == expected.keys() and all(torch.equal(frozen[n], expected[n]) for n in expected)
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
        # The run's own export and training.export's of its last checkpoint.
        for path in (output / "export" / "dit.safetensors", export_checkpoint(output)):
            model = WanDiT(get_config("tiny"))
            assert load_checkpoint(model, path) == ([], [])
            exported = model.state_dict()
            assert all(torch.allclose(exported[n], expected[n], atol=1e-6) for n in expected), path
