"""Scenes as captioning sees them, and the frames sent to the VLM (sampled, resized, encoded)."""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import av
from PIL import Image

if TYPE_CHECKING:
    from curation.types import Scene

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneInput:
    """A scene to caption: a video and its shots as half-open ``[start, end)`` frame spans.

    Frames count in decode order of ``video_path``, so the video may be a scene clip or the
    source video itself.
    """

    key: str
    video_path: str
    shots: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not self.shots:
            raise ValueError(f"scene {self.key} has no shots")
        for start, end in self.shots:
            if not 0 <= start < end:
                raise ValueError(f"scene {self.key}: bad shot span [{start}, {end})")

    @classmethod
    def from_scene(cls, scene: "Scene") -> "SceneInput":
        """A curation ``Scene`` whose clip is at ``scene.clip_path``."""
        if not scene.clip_path:
            raise ValueError(f"scene {scene.key} has no clip_path")
        return cls(scene.key, scene.clip_path, tuple((s.start_frame, s.end_frame) for s in scene.shots))


SceneLike = Union[SceneInput, "Scene"]


def as_scene_input(scene: SceneLike) -> SceneInput:
    return scene if isinstance(scene, SceneInput) else SceneInput.from_scene(scene)


def sample_indices(start: int, end: int, k: int) -> list[int]:
    """``k`` frames of ``[start, end)``: the centres of ``k`` equal parts (fewer if the shot is shorter).

    Centres rather than ends: the first and last frames of a detected shot are the likeliest to
    carry a fade or a frame of the neighbouring shot.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    length = end - start
    return sorted({start + int((i + 0.5) * length / k) for i in range(k)})


def decode_frames(path: str, indices: Sequence[int]) -> dict[int, Image.Image]:
    """Decode the frames at ``indices`` (0-based decode order) as RGB images."""
    wanted = set(indices)
    last = max(wanted)
    frames: dict[int, Image.Image] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames[index] = frame.to_image()
            if index >= last:
                break
    missing = wanted - frames.keys()
    if missing:
        raise ValueError(f"{path}: frames {sorted(missing)[:5]} are past the end of the video")
    return frames


def resize(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is at most ``max_side`` pixels; never enlarge."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def data_url(image: Image.Image, quality: int = 90) -> str:
    """A ``data:image/jpeg;base64,…`` URL, the image form every OpenAI-compatible server accepts."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_from_data_url(url: str) -> Image.Image:
    """The inverse of :func:`data_url` (any base64 image data URL)."""
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError("only base64 image data URLs are supported")
    return Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")


def shot_frame_urls(scene: SceneInput, frames_per_shot: int, max_side: int) -> list[list[str]]:
    """For each shot, ``frames_per_shot`` sampled frames as data URLs (one decode pass per scene)."""
    per_shot = [sample_indices(start, end, frames_per_shot) for start, end in scene.shots]
    decoded = decode_frames(scene.video_path, [i for indices in per_shot for i in indices])
    logger.debug("scene %s: decoded %d frames", scene.key, len(decoded))
    return [[data_url(resize(decoded[i], max_side)) for i in indices] for indices in per_shot]
