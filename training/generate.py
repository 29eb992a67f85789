"""Generate a multi-shot video from a HoloCine prompt: an mp4 plus a JSON of what was asked.

    python -m training.generate --checkpoint dit.safetensors --encoders /models/Wan2.1-T2V-1.3B-Diffusers \\
        --prompt "[global caption] ... [per shot caption] ... [shot cut] ..." --cuts 37,73 --out out/video.mp4
    # Wan2.2 A14B as HoloCine runs it: high-noise expert above the boundary (0.875), low-noise below
    python -m training.generate --preset wan2.2-a14b --checkpoint full_high_noise.safetensors \\
        --low-noise-checkpoint full_low_noise.safetensors --holocine-compat --encoders /models/Wan2.2-T2V-A14B ...

The prompt is a string, a text file, or a shard sample's ``KEY.json`` (its prompt, ``shot_cut_frames``
and ``num_frames`` become the defaults). Cuts are clip frames (``--cuts``) or shot lengths
(``--frames-per-shot``); a cut off the latent grid is moved to the nearest ``4k+1`` frame, as
HoloCine's inference script does, with a warning. Without cuts the prompt's shots get equal lengths.

It lives in ``training`` rather than ``holocine_model`` because it needs the encoders and the prompt
format (``curation.prompt_format``), which the model package may not import (ARCHITECTURE.md, layering).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from curation.prompt_format import PromptTokens, count_shots, tokenize_prompt
from holocine_model import FlowEulerSampler, ShotLayout, WanDiT, get_config, load_checkpoint

from .encoders import Encoders, load_encoders
from .video import write_mp4

log = logging.getLogger("training.generate")


def nearest_4k_plus_1(frame: int) -> int:
    """HoloCine's ``enforce_4t_plus_1``: the ``4k+1`` frame nearest ``frame`` (Python's round: ties to even k)."""
    return 4 * round((frame - 1) / 4) + 1


def resolve_cuts(num_frames: int, num_shots: int, cut_frames: list[int] | None = None,
                 frames_per_shot: list[int] | None = None) -> list[int]:
    """Cut frames on the latent grid, inside ``(0, num_frames)``, sorted and distinct.

    ``frames_per_shot`` gives shot lengths (their running sums are the cuts); with neither, the
    ``num_shots`` shots get equal lengths, as HoloCine's helper computes them.
    """
    if cut_frames is not None and frames_per_shot is not None:
        raise ValueError("give cut frames or frames per shot, not both")
    if frames_per_shot is not None:
        if sum(frames_per_shot) != num_frames:
            raise ValueError(f"frames per shot {frames_per_shot} sum to {sum(frames_per_shot)}, not {num_frames}")
        cut_frames = [sum(frames_per_shot[:i]) for i in range(1, len(frames_per_shot))]
    if cut_frames is None:
        cut_frames = [round(i * num_frames / num_shots) for i in range(1, num_shots)]
    on_grid = sorted({nearest_4k_plus_1(f) for f in cut_frames})
    if on_grid != list(cut_frames):
        log.warning("cut frames %s moved to the latent grid (4k+1 frames): %s", list(cut_frames), on_grid)
    kept = [f for f in on_grid if 0 < f < num_frames]
    if kept != on_grid:
        log.warning("cut frames outside (0, %d) dropped: %s", num_frames, sorted(set(on_grid) - set(kept)))
    return kept


@dataclass
class GenerateConfig:
    # DiT weights: our export, Wan / DiffSynth / HoloCine safetensors or a diffusers transformer/ folder;
    # None builds a random model (tests). For A14B this is the high-noise expert.
    checkpoint: str | None = None
    # Wan2.2 A14B's low-noise expert; steps below `boundary` run on it.
    low_noise_checkpoint: str | None = None
    preset: str = "wan2.1-1.3b"
    # Encoders folder (diffusers or Wan's original layout) or "tiny" (tests); see training/encoders.py.
    encoders: str = "tiny"
    # Reproduce HoloCine's released attention (for HoloCine's own weights; see holocine_model/attention.py).
    holocine_compat: bool = False
    attention_backend: str = "auto"
    num_frames: int = 81
    height: int = 480
    width: int = 832
    steps: int = 50
    shift: float = 5.0
    guidance: float = 5.0
    boundary: float = 0.875
    negative_prompt: str = ""
    seed: int = 0
    text_len: int = 512
    fps: int = 16


@dataclass
class GenerationRecord:
    """What was asked and what was used: written next to the mp4 as ``NAME.json``."""

    video: str
    prompt: str
    cleaned_prompt: str
    num_shots: int
    # Where the video's shots start, clip frames (the shard sample's key, so evaluate reads both).
    shot_cut_frames: list[int]
    requested_cuts: list[int] | None
    requested_frames_per_shot: list[int] | None
    global_span: list[int] | None
    shot_spans: list[list[int]]
    config: dict = field(default_factory=dict)
    seconds: float = 0.0


class Generator:
    """Encoders and DiT(s) loaded once; ``__call__`` makes one video."""

    def __init__(self, config: GenerateConfig, device: torch.device | str | None = None) -> None:
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        dtype = torch.bfloat16 if self.cuda else torch.float32
        self.encoders: Encoders = load_encoders(config.encoders, self.device, dtype)
        self.model = self._load_dit(config.checkpoint)
        self.low_noise_model = self._load_dit(config.low_noise_checkpoint) if config.low_noise_checkpoint else None
        if self.encoders.latent_channels != self.model.config.in_channels:
            raise ValueError(f"the VAE has {self.encoders.latent_channels} latent channels, preset "
                             f"{config.preset!r} takes {self.model.config.in_channels}")

    def _load_dit(self, checkpoint: str | None) -> WanDiT:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # a random model (no checkpoint) is the same for a seed
            model = WanDiT(get_config(cfg.preset, holocine_compat=cfg.holocine_compat,
                                      attention_backend=cfg.attention_backend))
        if checkpoint:
            load_checkpoint(model, checkpoint)
            log.info("DiT weights from %s", checkpoint)
        model.eval().requires_grad_(False)
        if self.cuda:
            model.to_compute_dtype(torch.bfloat16)  # fp32 kept where Wan keeps it
        return model.to(self.device)

    def _encode(self, tokens: PromptTokens) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([tokens.input_ids])
        mask = torch.tensor([tokens.attention_mask])
        return self.encoders.encode_text(ids, mask), mask.to(self.device)

    @torch.no_grad()
    def __call__(self, prompt: str, out: str | Path, cut_frames: list[int] | None = None,
                 frames_per_shot: list[int] | None = None) -> GenerationRecord:
        cfg, started = self.config, time.perf_counter()
        tokens = tokenize_prompt(self.encoders.tokenizer, prompt, cfg.text_len)
        spans = tokens.spans
        prompt_shots = len(spans.shot_spans) or count_shots(tokens.text)
        cuts = resolve_cuts(cfg.num_frames, prompt_shots, cut_frames, frames_per_shot)
        layout = ShotLayout.from_cut_frames(cfg.num_frames, cuts)
        if spans.global_span is not None:
            if len(cuts) + 1 > len(spans.shot_spans):
                raise ValueError(f"the video has {len(cuts) + 1} shots, the prompt describes {len(spans.shot_spans)}")
            if len(cuts) + 1 < len(spans.shot_spans):
                log.warning("the prompt describes %d shots, the video has %d: the last captions go unused",
                            len(spans.shot_spans), len(cuts) + 1)
            # Every span the prompt defines, as HoloCine passes them (compat mode's padding reads them all).
            layout = ShotLayout(layout.shot_ids, [list(spans.global_span)], [[list(s) for s in spans.shot_spans]])
        text, mask = self._encode(tokens)
        negative_tokens = tokenize_prompt(self.encoders.tokenizer, cfg.negative_prompt, cfg.text_len)
        negative, negative_mask = self._encode(negative_tokens)

        vae = self.encoders.vae.config
        spatial = getattr(vae, "scale_factor_spatial", 8)
        if cfg.height % (2 * spatial) or cfg.width % (2 * spatial):
            raise ValueError(f"height and width must be multiples of {2 * spatial}, got {cfg.height}x{cfg.width}")
        latent_frames = (cfg.num_frames - 1) // 4 + 1
        shape = (1, self.encoders.latent_channels, latent_frames, cfg.height // spatial, cfg.width // spatial)
        sampler = FlowEulerSampler(cfg.steps, cfg.shift, cfg.guidance, cfg.boundary)
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext():
            latents = sampler.sample(self.model, shape, text, mask, layout, negative, negative_mask, seed=cfg.seed,
                                     device=self.device, low_noise_model=self.low_noise_model)
        video = self.encoders.decode_latents(latents)[0]
        out = Path(out)
        write_mp4(out, video, fps=cfg.fps)
        record = GenerationRecord(
            video=out.name, prompt=prompt, cleaned_prompt=tokens.text, num_shots=len(cuts) + 1,
            shot_cut_frames=cuts, requested_cuts=cut_frames, requested_frames_per_shot=frames_per_shot,
            global_span=list(spans.global_span) if spans.global_span else None,
            shot_spans=[list(s) for s in spans.shot_spans], config=asdict(cfg),
            seconds=round(time.perf_counter() - started, 3))
        out.with_suffix(".json").write_text(json.dumps(asdict(record), indent=2) + "\n")
        log.info("wrote %s (%d frames, cuts %s) in %.1f s", out, cfg.num_frames, cuts, record.seconds)
        return record


def read_prompt(value: str) -> tuple[str, dict]:
    """The prompt of ``value`` (a string, a text file or a shard sample's JSON) and the sample's
    ``num_frames`` / ``shot_cut_frames`` when it is one."""
    try:
        is_file = Path(value).is_file()
    except OSError:  # a prompt longer than a file name may be
        is_file = False
    if is_file:
        path = Path(value)
        text = path.read_text()
        if path.suffix == ".json":
            sample = json.loads(text)
            return sample["prompt"], {k: sample[k] for k in ("num_frames", "shot_cut_frames") if k in sample}
        return text, {}
    return value, {}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", "").split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    defaults = GenerateConfig()
    parser = argparse.ArgumentParser(prog="python -m training.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", required=True,
                        help="HoloCine prompt: the text, a text file, or a shard sample's KEY.json (required)")
    parser.add_argument("--out", required=True, type=Path, help="the mp4 to write; its JSON goes beside it (required)")
    parser.add_argument("--checkpoint", help="DiT weights, any layout load_checkpoint reads; A14B: the high-noise "
                                             "expert (default: none, a random model)")
    parser.add_argument("--low-noise-checkpoint", help="Wan2.2 A14B's low-noise expert (default: none, one model)")
    parser.add_argument("--preset", default=defaults.preset, help=f"model preset (default: {defaults.preset})")
    parser.add_argument("--encoders", default=defaults.encoders,
                        help=f"Wan encoders folder, diffusers or original layout (default: {defaults.encoders})")
    cuts = parser.add_mutually_exclusive_group()
    cuts.add_argument("--cuts", type=_ints, metavar="F1,F2,...",
                      help="clip frames where shots 2..N start (default: the sample's, else equal shots)")
    cuts.add_argument("--frames-per-shot", type=_ints, metavar="N1,N2,...", help="each shot's length in frames")
    parser.add_argument("--frames", type=int,
                        help="clip length, 4k+1 (default: the sum of --frames-per-shot, else the sample's, "
                             f"else {defaults.num_frames})")
    parser.add_argument("--height", type=int, default=defaults.height, help=f"default: {defaults.height}")
    parser.add_argument("--width", type=int, default=defaults.width, help=f"default: {defaults.width}")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"default: {defaults.steps}")
    parser.add_argument("--shift", type=float, default=defaults.shift, help=f"default: {defaults.shift}")
    parser.add_argument("--guidance", type=float, default=defaults.guidance, help=f"default: {defaults.guidance}")
    parser.add_argument("--boundary", type=float, default=defaults.boundary,
                        help=f"A14B expert switch, fraction of the 1000 timesteps (default: {defaults.boundary})")
    parser.add_argument("--negative-prompt", default=defaults.negative_prompt, help="default: empty")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"default: {defaults.seed}")
    parser.add_argument("--text-len", type=int, default=defaults.text_len, help=f"default: {defaults.text_len}")
    parser.add_argument("--fps", type=int, default=defaults.fps, help=f"default: {defaults.fps}")
    parser.add_argument("--holocine-compat", action="store_true",
                        help="reproduce HoloCine's released attention, for its weights (default: off)")
    parser.add_argument("--attention-backend", default=defaults.attention_backend,
                        help=f"default: {defaults.attention_backend}")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prompt, sample = read_prompt(args.prompt)
    shot_total = sum(args.frames_per_shot) if args.frames_per_shot else None
    frames = args.frames or shot_total or sample.get("num_frames") or GenerateConfig.num_frames
    if frames != nearest_4k_plus_1(frames):
        log.warning("--frames %d is not 4k+1: using %d", frames, nearest_4k_plus_1(frames))
        frames = nearest_4k_plus_1(frames)
    cut_frames = args.cuts
    if cut_frames is None and args.frames_per_shot is None:
        cut_frames = sample.get("shot_cut_frames")
    config = GenerateConfig(
        checkpoint=args.checkpoint, low_noise_checkpoint=args.low_noise_checkpoint, preset=args.preset,
        encoders=args.encoders, holocine_compat=args.holocine_compat, attention_backend=args.attention_backend,
        num_frames=frames, height=args.height, width=args.width, steps=args.steps, shift=args.shift,
        guidance=args.guidance, boundary=args.boundary, negative_prompt=args.negative_prompt, seed=args.seed,
        text_len=args.text_len, fps=args.fps)
    Generator(config)(prompt, args.out, cut_frames, args.frames_per_shot)


if __name__ == "__main__":
    main()
