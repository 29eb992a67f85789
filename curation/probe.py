"""Probe an input: is it a video we can use, and what are its fps, size, length and codec."""

from __future__ import annotations

import logging
import os
import stat

import av

from curation.config import ProbeConfig
from curation.decode import decord_agrees_with_ffmpeg
from curation.types import VideoInfo, video_id_for

log = logging.getLogger(__name__)

# Demuxers FFmpeg uses for still images; such a file may carry any extension.
_IMAGE_FORMATS = ("image2", "_pipe", "gif", "webp")
_IMAGE_CODECS = {"png", "mjpeg", "bmp", "tiff", "webp", "gif", "jpeg2000", "jpegls", "pgm", "ppm"}


class ProbeError(Exception):
    """An input that is not a usable video; the message is meant for a person."""


def probe_video(uri: str, config: ProbeConfig | None = None) -> VideoInfo:
    """Probe one local file. Never raises for bad input: returns a failed VideoInfo instead."""
    config = config or ProbeConfig()
    info = VideoInfo(video_id=video_id_for(uri), uri=uri)
    try:
        _check_file(uri)
        _read_stream_info(uri, info, config)
        info.decoder = _choose_decoder(uri, config)
    except ProbeError as exc:
        info.status, info.error = "failed", str(exc)
    except Exception as exc:  # anything else a broken file makes FFmpeg or decord say
        info.status, info.error = "failed", f"unreadable video: {type(exc).__name__}: {exc}"
    if info.status == "failed":
        log.warning("probe failed for %s: %s", uri, info.error)
    return info


def _check_file(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ProbeError("file not found") from None
    except PermissionError:
        raise ProbeError("permission denied") from None
    if stat.S_ISDIR(st.st_mode):
        raise ProbeError("is a directory, not a video file")
    if not stat.S_ISREG(st.st_mode):
        raise ProbeError("not a regular file")
    if st.st_size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        raise ProbeError("permission denied") from None


def _read_stream_info(path: str, info: VideoInfo, config: ProbeConfig) -> None:
    try:
        container = av.open(path)
    except av.FFmpegError as exc:
        raise ProbeError(f"not a readable media file ({_ffmpeg_reason(exc)})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no"]
            raise ProbeError(f"no video stream (found {', '.join(kinds)} streams)")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec in _IMAGE_CODECS or any(f in container.format.name for f in _IMAGE_FORMATS):
            raise ProbeError(f"a still image ({codec}), not a video")
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if fps <= 0:
            raise ProbeError("no frame rate in the stream")
        info.fps = fps
        info.codec = codec
        info.width = stream.codec_context.width
        info.height = stream.codec_context.height
        # The container's count; replaced by the exact decoded count after shot detection.
        info.num_frames = stream.frames or _frames_from_duration(container, stream, fps)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise ProbeError(f"cannot decode video ({_ffmpeg_reason(exc)})") from None
        if first is None:
            raise ProbeError("video stream has no decodable frames")
        if info.num_frames < config.min_frames:
            raise ProbeError(
                f"too short: {info.num_frames} frame(s), at least {config.min_frames} needed"
            )
        info.duration_s = info.num_frames / fps


def _frames_from_duration(container: av.container.InputContainer, stream, fps: float) -> int:
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base) * fps)
    if container.duration:
        return round(container.duration / av.time_base * fps)
    return 0


def _choose_decoder(path: str, config: ProbeConfig) -> str:
    if config.decoder == "pyav":
        return "pyav"
    with av.open(path) as container:
        container_frames = container.streams.video[0].frames
    agrees, reason = decord_agrees_with_ffmpeg(path, container_frames, config.decoder_check_frames)
    if not agrees:
        log.info("%s: using PyAV, not decord: %s", path, reason)
    return "decord" if agrees else "pyav"


def _ffmpeg_reason(exc: av.FFmpegError) -> str:
    return exc.strerror or str(exc)
