"""Transition control during training: generate the validation samples from their prompts and cuts,
then score how many of the requested cuts our shot detector finds (``training.evaluate``).

Run every ``validation.transition_every`` steps; ``metrics.jsonl`` gets ``cut_accuracy`` (found /
requested cuts) and ``extra_cuts`` (per video), so a fine-tuning run shows transition control
improving or regressing. The videos and the per-video score land in
``OUTPUT/samples/transitions/step-N/``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from curation.prompt_format import tokenize_prompt
from holocine_model import FlowEulerSampler, ShotLayout

from .video import write_mp4


def cut_frames_of(shot_ids: torch.Tensor) -> list[int]:
    """Clip frames where shots 2..N start, from one sample's latent shot ids (latent frame t >= 1
    covers clip frames 4t-3 .. 4t, so a shot starting at latent t starts at frame 4t-3)."""
    starts = (shot_ids[1:] != shot_ids[:-1]).nonzero().flatten() + 1
    return [4 * int(t) - 3 for t in starts]


def _negative(runner, text_len: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty negative prompt's states, as HoloCine's pipeline uses with guidance."""
    tokens = tokenize_prompt(runner.encoders.tokenizer, "", text_len)
    ids, mask = torch.tensor([tokens.input_ids] * batch), torch.tensor([tokens.attention_mask] * batch)
    return runner.encoders.encode_text(ids, mask), mask.to(runner.device)


@torch.no_grad()
def transition_validation(runner, batches: list[dict], config, folder: Path, world) -> dict[str, float]:
    """Generate every validation sample (all ranks: the model may be sharded), write and score them
    on the main rank; returns the metrics to log (empty on the other ranks)."""
    runner.model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    validation = config.validation
    sampler = FlowEulerSampler(validation.sample_steps, config.flow.shift, validation.guidance_scale)
    requests = []
    for batch in batches:
        latents, text = runner.inputs(batch)
        mask = batch["attention_mask"].to(runner.device)
        negative = negative_mask = None
        if validation.guidance_scale != 1.0:
            negative, negative_mask = _negative(runner, mask.shape[1], len(batch["keys"]))
        layout: ShotLayout = batch["layout"]
        with torch.autocast("cuda", dtype=torch.bfloat16) if runner.autocast else contextlib.nullcontext():
            out = sampler.sample(runner.model, tuple(latents.shape), text, mask, layout, negative, negative_mask,
                                 seed=config.seed, device=runner.device)
        if world.is_main:
            videos = runner.encoders.decode_latents(out)
            for key, video, shot_ids in zip(batch["keys"], videos, layout.shot_ids):
                path = folder / f"{key}.mp4"
                write_mp4(path, video)
                requests.append((path, cut_frames_of(shot_ids)))
    runner.model.train()
    if not world.is_main:
        return {}
    # Imported here: scoring needs the shot detector (PySceneDetect), which training needs for nothing else.
    from .evaluate import EvalConfig, score_videos

    score = score_videos(requests, EvalConfig(tolerance=validation.transition_tolerance))
    (folder / "score.json").write_text(json.dumps(asdict(score), indent=2) + "\n")
    return {"cut_accuracy": score.cut_accuracy, "extra_cuts": score.extra_cuts / max(1, score.videos)}
