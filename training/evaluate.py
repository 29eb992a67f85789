"""Shot-cut accuracy of generated videos (HoloCine's Transition Control), with our shot detector.

    python -m training.evaluate out/videos            # every NAME.mp4 with a NAME.json holding shot_cut_frames
    python -m training.evaluate cuts.jsonl --tolerance 4 --out score.json
                                                      # lines {"video": "a.mp4", "cuts": [37, 73]}

For each video the hard cuts found by ``curation.shots.detect_shots`` (the detector that curates
the training data) are matched one to one to the requested cuts, nearest first, within
``tolerance`` frames. The score is the fraction of requested cuts found (``cut_accuracy``), the
cuts found that nobody asked for (``extra_cuts``), and per-video details. Fades and dissolves the
detector reports are listed per video but are not cuts. A ``NAME.json`` is what
``training.generate`` writes, or a shard sample's ``KEY.json``: both hold ``shot_cut_frames``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from curation.config import DetectConfig, ProbeConfig
from curation.probe import probe_video
from curation.shots import detect_shots

log = logging.getLogger("training.evaluate")


@dataclass
class EvalConfig:
    # A requested cut counts as found when a detected cut lies within this many frames of it. 4 is one
    # latent frame: where inside it the picture changes is the VAE decoder's choice.
    tolerance: int = 4
    detect: DetectConfig = field(default_factory=DetectConfig)


@dataclass
class VideoScore:
    video: str
    requested: list[int]
    detected: list[int] = field(default_factory=list)
    matched: list[tuple[int, int]] = field(default_factory=list)  # (requested, detected)
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    transitions: list[tuple[int, int, str]] = field(default_factory=list)  # fades / dissolves, not cuts
    error: str | None = None


@dataclass
class TransitionScore:
    videos: int
    requested_cuts: int
    found_cuts: int
    extra_cuts: int
    cut_accuracy: float  # found / requested (1.0 when nothing was requested)
    exact_videos: float  # share of videos with every cut found and no extra one
    failed_videos: int
    per_video: list[VideoScore]

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "per_video"}


def match_cuts(requested: Iterable[int], detected: Iterable[int], tolerance: int) -> list[tuple[int, int]]:
    """One-to-one (requested, detected) pairs within ``tolerance`` frames, the closest pairs first."""
    pairs = sorted((abs(r - d), r, d) for r in set(requested) for d in set(detected) if abs(r - d) <= tolerance)
    used_r, used_d, matched = set(), set(), []
    for _, r, d in pairs:
        if r not in used_r and d not in used_d:
            used_r.add(r)
            used_d.add(d)
            matched.append((r, d))
    return sorted(matched)


def score_video(video: str | Path, requested: list[int], config: EvalConfig) -> VideoScore:
    """Detect the cuts of one video and match them to ``requested``; an unreadable video is an error, not a raise."""
    score = VideoScore(str(video), sorted(requested))
    info = probe_video(str(video), ProbeConfig())
    if not info.ok:
        score.error = info.error
        score.missing = score.requested
        return score
    detection = detect_shots(info, config.detect)
    score.detected = list(detection.cuts)
    score.transitions = [(t.start_frame, t.end_frame, t.kind) for t in detection.transitions]
    score.matched = match_cuts(score.requested, score.detected, config.tolerance)
    score.missing = sorted(set(score.requested) - {r for r, _ in score.matched})
    score.extra = sorted(set(score.detected) - {d for _, d in score.matched})
    return score


def score_videos(items: Iterable[tuple[str | Path, list[int]]], config: EvalConfig | None = None) -> TransitionScore:
    """Transition control over (video, requested cut frames) pairs."""
    config = config or EvalConfig()
    scores = [score_video(video, cuts, config) for video, cuts in items]
    requested = sum(len(s.requested) for s in scores)
    found = sum(len(s.matched) for s in scores)
    exact = sum(not s.missing and not s.extra and s.error is None for s in scores)
    return TransitionScore(
        videos=len(scores), requested_cuts=requested, found_cuts=found,
        extra_cuts=sum(len(s.extra) for s in scores),
        cut_accuracy=found / requested if requested else 1.0,
        exact_videos=exact / len(scores) if scores else 0.0,
        failed_videos=sum(s.error is not None for s in scores), per_video=scores)


def _cuts(record: dict) -> list[int]:
    cuts = record.get("cuts", record.get("shot_cut_frames"))
    if cuts is None:
        raise ValueError(f"no 'cuts' or 'shot_cut_frames' in {record}")
    return [int(c) for c in cuts]


def read_requests(path: str | Path) -> list[tuple[Path, list[int]]]:
    """(video, requested cuts) from a folder of NAME.mp4 + NAME.json or a JSONL of {video, cuts}."""
    path = Path(path)
    if path.is_dir():
        items = []
        for video in sorted(path.glob("*.mp4")):
            meta = video.with_suffix(".json")
            if not meta.is_file():
                log.warning("%s has no %s: skipped", video, meta.name)
                continue
            items.append((video, _cuts(json.loads(meta.read_text()))))
        return items
    items = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            items.append((path.parent / record["video"], _cuts(record)))
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a folder of NAME.mp4 + NAME.json, or a JSONL of {video, cuts} "
                                       "(videos relative to the JSONL's folder)")
    parser.add_argument("--tolerance", type=int, default=EvalConfig.tolerance,
                        help=f"frames between a requested and a detected cut (default: {EvalConfig.tolerance})")
    parser.add_argument("--out", type=Path, help="write the full score, per-video details included, here "
                                                 "(default: none; the summary is printed)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    score = score_videos(read_requests(args.source), EvalConfig(tolerance=args.tolerance))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(score), indent=2) + "\n")
    print(json.dumps(score.summary()))


if __name__ == "__main__":
    main()
