"""Shot filters: each scores a shot, and a shot failing any threshold is dropped with a reason."""

from __future__ import annotations

from curation.config import FilterConfig
from curation.shots import ShotDetection
from curation.types import Shot


def score_shots(video_id: str, detection: ShotDetection) -> list[Shot]:
    """Shots of a detection with their filter scores (brightness, motion) from the analysis pass."""
    analysis = detection.analysis
    motion = analysis.motion
    shots = []
    for index, (start, end) in enumerate(detection.shots):
        # Frame `start`'s motion compares it with the previous shot; leave it out.
        inner_motion = motion[start + 1 : end]
        scores = {
            "brightness": float(analysis.luma[start:end].mean()),
            "motion": float(inner_motion.mean()) if len(inner_motion) else 0.0,
            "damaged": float(sum(max(0, min(end, e) - max(start, s)) for s, e in detection.damaged)),
        }
        shots.append(Shot(video_id, index, start, end, detection.fps, scores=scores))
    return shots


def drop_reason(shot: Shot, config: FilterConfig) -> str | None:
    """Why the shot is dropped, or None when it is kept. The first failing filter wins."""
    if shot.scores.get("damaged", 0) > 0:
        return f"damaged ({shot.scores['damaged']:.0f} frame(s) after a decode error)"
    if shot.duration_s < config.min_duration_s:
        return f"too_short ({shot.duration_s:.2f} s < {config.min_duration_s} s)"
    if shot.duration_s > config.max_duration_s:
        return f"too_long ({shot.duration_s:.1f} s > {config.max_duration_s} s)"
    if shot.scores["brightness"] < config.min_brightness:
        return f"dark (mean luma {shot.scores['brightness']:.1f} < {config.min_brightness})"
    if shot.scores["motion"] < config.min_motion:
        return f"static (motion {shot.scores['motion']:.2f} < {config.min_motion})"
    return None


def filter_shots(shots: list[Shot], config: FilterConfig) -> list[Shot]:
    """Mark every shot kept or dropped (in place) and return them all."""
    for shot in shots:
        shot.drop_reason = drop_reason(shot, config)
        shot.kept = shot.drop_reason is None
    return shots
