"""Context parallelism over 2 gloo processes gives one process's outputs and gradients (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from holocine_model import ShotLayout, WanDiT, get_config
from holocine_model.context_parallel import ContextParallel

WORLD = 2
# (name, model overrides, per-token timesteps, FSDP2, gradient checkpointing)
CASES = [
    ("sparse", {}, False, False, False),
    ("sparse-compat", {"holocine_compat": True}, False, False, False),
    ("full", {"sparse_self_attention": False}, False, False, False),
    ("per-shot-backend", {"attention_backend": "per_shot"}, False, False, False),
    ("per-token-timesteps", {}, True, False, False),
    ("fsdp2", {}, False, True, False),
    # Block 0 fully recomputed (all-to-alls included), block 1 selectively: keeps its attention kernel's output.
    ("checkpointed", {"attention_backend": "per_shot"}, False, True, True),
]


def case_inputs(per_token: bool) -> tuple:
    """Two clips of 5 latent frames (60 tokens: each rank's 30 end mid-frame and mid-shot), 4 and 2 shots."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 5, 8, 6, generator=g, dtype=torch.float64)
    text = torch.randn(2, 16, 24, generator=g, dtype=torch.float64)
    if per_token:
        timesteps = torch.cat([torch.zeros(2, 12), torch.full((2, 48), 700.0)], dim=1).double()
    else:
        timesteps = torch.tensor([900.0, 100.0], dtype=torch.float64)
    layout = ShotLayout.from_frames_per_shot(
        [[1, 2, 1, 1], [3, 2]], global_spans=[[0, 3], [0, 4]],
        shot_spans=[[[3, 6], [6, 8], [8, 11], [11, 13]], [[4, 9], [9, 12]]])
    return latents, timesteps, text, None, layout


def run_case(overrides: dict, per_token: bool, fsdp: bool, checkpoint: bool, context: ContextParallel | None) -> dict:
    """Output, loss and parameter gradients (averaged over the group's ranks, as FSDP2 averages)."""
    torch.manual_seed(0)
    model = WanDiT(get_config("tiny", **{"attention_backend": "dense", **overrides})).double()
    model.enable_gradient_checkpointing(checkpoint, selective_blocks=1)
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    model.enable_context_parallel(context)
    out = model(*case_inputs(per_token))
    loss = out.square().mean() + out[:, :, 2].mean()  # not symmetric in the tokens
    loss.backward()
    grads = {}
    for name, param in model.named_parameters():
        grad = param.grad
        if fsdp:
            grad = grad.full_tensor()  # FSDP2 already averaged over the ranks
        elif context is not None:
            dist.all_reduce(grad)
            grad = grad / dist.get_world_size()
        grads[name] = grad.detach().clone()
    return {"out": out.detach(), "loss": loss.detach(), "grads": grads}


def _worker(rank: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    context = ContextParallel(dist.group.WORLD)
    outcome = {name: run_case(*options, context) for name, *options in CASES}
    model = WanDiT(get_config("tiny"))
    model.enable_context_parallel(context)
    try:
        model(torch.randn(1, 4, 5, 6, 6), torch.tensor([500.0]), torch.randn(1, 16, 24))  # 5 x 3 x 3 tokens
    except ValueError as exc:
        outcome["odd tokens"] = str(exc)
    if rank == 0:
        torch.save(outcome, results)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def parallel_results(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("context-parallel")
    results = folder / "results.pt"
    mp.spawn(_worker, args=(str(folder / "init"), str(results)), nprocs=WORLD, join=True)
    return torch.load(results)


@pytest.mark.parametrize("name, overrides, per_token, fsdp, checkpoint", CASES, ids=[case[0] for case in CASES])
def test_context_parallel_matches_one_process(parallel_results, name, overrides, per_token, fsdp, checkpoint):
    expected = run_case(overrides, per_token, False, checkpoint, None)
    got = parallel_results[name]
    torch.testing.assert_close(got["out"], expected["out"])
    torch.testing.assert_close(got["loss"], expected["loss"])
    assert got["grads"].keys() == expected["grads"].keys()
    for key, grad in expected["grads"].items():
        torch.testing.assert_close(got["grads"][key], grad, msg=lambda m, key=key: f"{key}: {m}")


def test_tokens_the_group_does_not_divide_are_refused(parallel_results):
    assert "video tokens (45) and attention heads (2)" in parallel_results["odd tokens"]
