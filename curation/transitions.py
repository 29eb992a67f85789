"""Gradual transitions: frames of fades and cross-dissolves, which belong to no shot.

Fades are anchored on black frames (mean luma under a threshold): the ramp before a black run
darkens frame after frame (luma and contrast both fall), the ramp after it brightens.

A dissolve frame is a blend ``(1 - a) * A + a * B`` of the last clean frame before the
dissolve and the first clean frame after it, with ``a`` rising linearly. Mixing two unrelated
pictures lowers the contrast (luma std) mid-way below both sides, which camera motion over one
picture does not do; so contrast dips are the candidates, and a candidate becomes a dissolve
where a range of frames around it fits the linear blend model on gray thumbnails and its
middle frames are really in between (a hard cut fits a blend ramp badly and has no frame that
is far from both sides).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.config import DetectConfig


@dataclass(frozen=True)
class Transition:
    start_frame: int
    end_frame: int  # exclusive
    kind: str  # "fade" (through or from/to black) or "dissolve"


def find_transitions(
    thumbs: np.ndarray, luma: np.ndarray, contrast: np.ndarray, config: DetectConfig
) -> list[Transition]:
    """Transition frame ranges, from gray thumbnails [N, h, w], mean luma [N] and luma std [N]."""
    black = luma < config.black_luma
    marked = black.copy()
    for start, end in _runs(black):
        marked[_fade_ramp_start(luma, contrast, start, config) : start] = True
        marked[end : _fade_ramp_end(luma, contrast, end, config)] = True
    flat = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    for center in _contrast_dips(flat, contrast, config):
        blend = _fit_dissolve(flat, contrast, black, center, config)
        if blend is not None:
            marked[blend[0] : blend[1]] = True
    transitions = []
    for start, end in _runs(marked):
        kind = "fade" if black[start:end].any() else "dissolve"
        transitions.append(Transition(start, end, kind))
    return transitions


def _fade_ramp_start(luma: np.ndarray, contrast: np.ndarray, black_start: int, config: DetectConfig) -> int:
    """First frame of the fade-out that ends at black_start (black_start if there is none)."""
    t = black_start
    while t > 0 and luma[t - 1] > luma[t] + config.fade_min_step and contrast[t - 1] >= contrast[t]:
        t -= 1
    return t


def _fade_ramp_end(luma: np.ndarray, contrast: np.ndarray, black_end: int, config: DetectConfig) -> int:
    """End (exclusive) of the fade-in that starts at black_end."""
    t = black_end
    while t < len(luma) and luma[t] > luma[t - 1] + config.fade_min_step and contrast[t] >= contrast[t - 1]:
        t += 1
    return t


def _contrast_dips(flat: np.ndarray, contrast: np.ndarray, config: DetectConfig) -> list[int]:
    """Frames where contrast dips below the line between frames w before and w after, while the
    picture changes clearly across the window; one frame (the deepest) per run of such frames."""
    n = len(contrast)
    depth = np.ones(n, dtype=np.float32)
    for w in config.dissolve_scales:
        if n <= 2 * w:
            continue
        line = (contrast[: n - 2 * w] + contrast[2 * w :]) / 2
        ratio = contrast[w : n - w] / np.maximum(line, 1e-6)
        changed = _rms(flat[2 * w :] - flat[: n - 2 * w]) >= config.transition_min_change
        ratio = np.where(changed, ratio, 1.0)
        depth[w : n - w] = np.minimum(depth[w : n - w], ratio)
    dipping = depth <= config.dissolve_max_contrast_ratio
    return [start + int(np.argmin(depth[start:end])) for start, end in _runs(dipping)]


def _fit_dissolve(
    flat: np.ndarray, contrast: np.ndarray, black: np.ndarray, center: int, config: DetectConfig
) -> tuple[int, int] | None:
    """The longest range [s, e) around `center` whose frames fit a linear blend of frame s-1
    into frame e, or None. Longest, because every blended frame must leave the shots."""
    first = max(1, center - config.max_dissolve_frames // 2)
    last = min(len(flat) - 1, center + config.max_dissolve_frames)
    window = flat[first - 1 : last + 1]
    # RMS distance between every two frames of the neighbourhood, and the largest single step
    # between any two of them, for cheap rejection before the blend fit.
    sq = (window * window).sum(axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * window @ window.T, 0) / window.shape[1])
    steps = np.diagonal(dist, offset=1)
    for length in range(config.max_dissolve_frames, config.min_dissolve_frames - 1, -1):
        fits = []
        for s in range(max(first, center - length + 1), center + 1):
            e = s + length
            if e > last or black[s - 1 : e + 1].any():
                continue
            change = dist[s - first, e - first + 1]
            if change < config.transition_min_change:
                continue
            # A dissolve moves a little every frame; one big step is a hard cut.
            if steps[s - first : e - first + 1].max() > config.dissolve_max_step * change:
                continue
            residual = _ramp_fit(flat, contrast, s, e, config)
            if residual is not None:
                fits.append((residual, s, e))
        if fits:
            _, s, e = min(fits)
            return s, e
    return None


def _ramp_fit(
    flat: np.ndarray, contrast: np.ndarray, s: int, e: int, config: DetectConfig
) -> float | None:
    """Mean residual of frames [s, e) as a linear blend of frames s-1 and e, relative to how
    much the two differ; None when the range is not a dissolve."""
    a, b = flat[s - 1], flat[e]
    change = float(_rms(b - a))
    alpha = (np.arange(s, e) - s + 1) / (e - s + 1)
    # Mixing two pictures lowers contrast below what the sides would give.
    sides = (1 - alpha) * contrast[s - 1] + alpha * contrast[e]
    if (contrast[s:e] / np.maximum(sides, 1e-6)).min() > config.dissolve_max_contrast_ratio:
        return None
    frames = flat[s:e]
    residual = float(_rms(frames - (a + alpha[:, None] * (b - a))).mean()) / change
    if residual > config.transition_max_residual:
        return None
    in_between = np.minimum(_rms(frames - a), _rms(frames - b)).max() / change
    if in_between < config.dissolve_min_in_between:
        return None
    return residual


def _rms(values: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(values * values, axis=-1))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, end) ranges of consecutive True values."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
