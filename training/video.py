"""Clip decoding, fitting to a training bucket, and mp4 writing for validation samples."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F


def decode_frames(mp4: bytes, num_frames: int) -> np.ndarray:
    """The first ``num_frames`` frames as uint8 [F, H, W, 3]; raises if the clip is shorter."""
    frames = []
    with av.open(io.BytesIO(mp4)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == num_frames:
                break
    if len(frames) < num_frames:
        raise ValueError(f"clip has {len(frames)} frames, need {num_frames}")
    return np.stack(frames)


def fit_to_bucket(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Resize to cover ``height`` x ``width`` keeping the aspect ratio, centre-crop; float [3, F, H, W] in [-1, 1]."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [F, 3, h, w]
    h, w = video.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[..., top:top + height, left:left + width]
    return (video / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


def write_mp4(path: str | Path, video: torch.Tensor, fps: int = 16) -> None:
    """Write float [3, F, H, W] in [-1, 1] as H.264."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
