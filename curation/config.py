"""Configuration of the curation stages: one dataclass per stage, defaults that suit feature films."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

Decoder = Literal["pyav", "decord"]


@dataclass
class ProbeConfig:
    # Fewer frames than this is not a video we can cut a shot from.
    min_frames: int = 8
    # The detection pass's decoder. PyAV costs less CPU per frame (more so without deblocking,
    # see DetectConfig.skip_deblocking); "decord" is used for a file only where it reproduces
    # FFmpeg's frame numbering, and PyAV elsewhere.
    decoder: Decoder = "pyav"
    # Frames compared between decord and PyAV when deciding whether decord can be trusted.
    decoder_check_frames: int = 8
    # FFmpeg decoding threads per video (0 = FFmpeg decides). One, because Ray runs a video per CPU.
    decode_threads: int = 1


@dataclass
class DetectConfig:
    detector: Literal["adaptive", "content"] = "adaptive"
    # Frames are decoded at this width for detection: hard cuts are found as exactly as at
    # PySceneDetect's usual 256, and analysis stays under a tenth of decode time on 360p video.
    analysis_width: int = 128
    # Decode without the H.264/HEVC deblocking filter (PyAV only): a quarter of the decode time
    # at 1080p, for cut scores that move by a few percent (only a cut sitting on the threshold
    # can flip). Clips always decode in full.
    skip_deblocking: bool = True
    adaptive_threshold: float = 3.0
    min_content_val: float = 15.0
    content_threshold: float = 27.0
    # Minimum frames between two hard cuts.
    min_scene_len: int = 8
    # A frame whose mean luma (0-255) is below this is black and belongs to no shot.
    black_luma: float = 16.0
    # Fade ramps: each frame towards black is darker than the last by at least this much luma.
    fade_min_step: float = 0.3
    # Gradual transitions are fitted on gray thumbnails of this size (width, height).
    thumb_size: tuple[int, int] = (32, 18)
    # Dissolve candidates: contrast (luma std) dips to at most this share of the line between
    # the frames `w` before and after, for a w in `dissolve_scales` ...
    dissolve_scales: tuple[int, ...] = (4, 8, 12, 16)
    dissolve_max_contrast_ratio: float = 0.9
    # ... while the two sides differ by at least this much (RMS gray levels on thumbnails).
    transition_min_change: float = 10.0
    # A dissolve: frames fit a linear blend of the frames around them within this relative
    # residual, and some frame is at least `dissolve_min_in_between` away from both sides.
    transition_max_residual: float = 0.3
    dissolve_min_in_between: float = 0.3
    # No frame-to-frame step inside a dissolve is larger than this share of the whole change.
    dissolve_max_step: float = 0.35
    min_dissolve_frames: int = 3
    max_dissolve_frames: int = 48


@dataclass
class FilterConfig:
    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    # Mean luma (0-255) under which a shot is too dark to caption or learn from.
    min_brightness: float = 20.0
    # Mean absolute frame-to-frame change (gray levels on thumbnails) under which a shot is static.
    min_motion: float = 0.25


def _default_tiers() -> dict[str, int]:
    return {"5s": 81, "15s": 241, "60s": 961}


@dataclass
class SceneConfig:
    fps: float = 16.0
    # Tier name -> clip length in frames at `fps`; every length must be 4k+1.
    tiers: dict[str, int] = field(default_factory=_default_tiers)
    min_shots: int = 2
    max_shots: int = 13
    # Shortest shot kept inside a scene, in output frames (2 latent frames).
    min_shot_frames: int = 8
    # Longest gap (transition frames left out) between two shots that still makes them contiguous.
    max_gap_s: float = 2.0

    def __post_init__(self) -> None:
        for name, frames in self.tiers.items():
            if frames % 4 != 1:
                raise ValueError(f"tier {name!r}: {frames} frames is not 4k+1")


@dataclass
class ClipConfig:
    width: int = 832
    height: int = 480
    crf: int = 18
    preset: str = "veryfast"
    # libx264 threads per video (0 = x264 decides: 1.5 per core of the machine). One, because
    # Ray runs a video per CPU; more would oversubscribe a busy node.
    encode_threads: int = 1
    # Sources smaller than the clip are upscaled and the factor is recorded in the manifest;
    # set False to skip such videos instead.
    allow_upscale: bool = True
    # Sources are scaled to cover the clip and centre-cropped. A source whose shape is so far
    # from the clip's that the crop would keep less than this share of its picture (a 2x1000
    # strip, say) is skipped with the reason. 0.25 keeps upright 9:16 phone video in 832x480
    # clips (a third of the picture) and drops what no crop can make sense of.
    min_coverage: float = 0.25


@dataclass
class CurationConfig:
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CurationConfig":
        return build_config(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "CurationConfig":
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})


class UnknownConfigKeys(KeyError, ValueError, TypeError):
    """A config names keys its dataclass does not have (a typo must fail loudly). It is a
    KeyError, a ValueError and a TypeError, so callers can catch it as whichever they expect."""

    def __str__(self) -> str:
        return str(self.args[0])


def build_config(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from a nested mapping (parsed YAML), recursing into dataclass fields."""
    hints = typing.get_type_hints(cls)
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise UnknownConfigKeys(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if is_dataclass(hint):
            value = build_config(hint, value or {})
        elif typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            raise ValueError(f"{cls.__name__}.{name} must be one of {list(typing.get_args(hint))}, not {value!r}")
        elif typing.get_origin(hint) is tuple and value is not None:
            value = tuple(value)
        elif hint is float and isinstance(value, (int, str)):
            value = float(value)  # PyYAML reads "2e-4" (no dot) as a string
        kwargs[name] = value
    return cls(**kwargs)


def apply_override(data: dict[str, Any], item: str) -> None:
    """``a.b.c=value`` -> nested dict assignment into ``data``; the value is parsed as YAML."""
    dotted, sep, raw = item.partition("=")
    if not sep or not dotted:
        raise ValueError(f"override {item!r} is not key.path=value")
    *parents, leaf = dotted.split(".")
    node = data
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {name} is not a section")
    node[leaf] = yaml.safe_load(raw)
