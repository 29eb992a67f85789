"""Probe an input: is it a video we can use, and what are its fps, size, length and codec."""

from __future__ import annotations

import logging
import os
import stat
from itertools import islice

import av

from curation.config import ProbeConfig
from curation.decode import DecodeReport, decode_video, decord_agrees_with_ffmpeg, ffmpeg_reason, video_stream
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
        info.decoder = _choose_decoder(uri, info, config)
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
        raise ProbeError(f"not a readable media file ({ffmpeg_reason(exc)})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no"]
            raise ProbeError(f"no video stream (found {', '.join(kinds)} streams)")
        stream = video_stream(container)
        info.codec = stream.codec_context.name
        # Whether this is a video is decided by its frames, not its codec: Motion-JPEG is a
        # video of JPEG pictures, a PNG renamed .mp4 is one picture.
        first = list(islice(decode_video(container, stream, DecodeReport()), 2))
        if not first:
            raise ProbeError("video stream has no decodable frames")
        if len(first) == 1:
            if info.codec in _IMAGE_CODECS or any(f in container.format.name for f in _IMAGE_FORMATS):
                raise ProbeError(f"a still image ({info.codec}), not a video")
            raise ProbeError(f"too short: 1 frame, at least {config.min_frames} needed")
        fps = _frame_rate(container, stream)
        if fps <= 0:
            raise ProbeError("no frame rate in the stream")
        info.fps = fps
        info.rotation = round(first[0].rotation / 90) * 90 % 360
        width, height = stream.codec_context.width, stream.codec_context.height
        info.width, info.height = (height, width) if info.rotation in (90, 270) else (width, height)
        # The container's count; replaced by the exact decoded count after shot detection.
        info.num_frames = stream.frames or _frames_from_duration(container, stream, fps)
    if info.num_frames <= 0:  # the container states nothing usable (an AVI without index, a raw stream)
        info.num_frames = _count_packets(path)
    if info.num_frames < config.min_frames:
        raise ProbeError(f"too short: {info.num_frames} frame(s), at least {config.min_frames} needed")
    info.duration_s = info.num_frames / fps


def _frame_rate(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    """Frames per second: the average over the stream's timestamps, except where the stream has
    no timing (a raw elementary stream), whose "average" is the demuxer's default of 25; there
    the codec's own rate is the true one."""
    timed = stream.duration or container.duration
    rate = (stream.average_rate if timed else None) or stream.guessed_rate or stream.average_rate
    return float(rate or 0)


def _count_packets(path: str) -> int:
    """Frames by counting the video packets (one per frame; no decoding)."""
    with av.open(path) as container:
        return sum(1 for packet in container.demux(video_stream(container)) if packet.size)


def _frames_from_duration(container: av.container.InputContainer, stream, fps: float) -> int:
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base) * fps)
    if container.duration:
        return round(container.duration / av.time_base * fps)
    return 0


def _choose_decoder(path: str, info: VideoInfo, config: ProbeConfig) -> str:
    if config.decoder == "pyav":
        return "pyav"
    if info.rotation:
        log.info("%s: using PyAV, not decord: the picture is rotated %d degrees", path, info.rotation)
        return "pyav"
    with av.open(path) as container:
        container_frames = video_stream(container).frames
    agrees, reason = decord_agrees_with_ffmpeg(path, container_frames, config.decoder_check_frames)
    if not agrees:
        log.info("%s: using PyAV, not decord: %s", path, reason)
    return "decord" if agrees else "pyav"
