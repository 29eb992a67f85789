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
    thumbs: np.ndarray,
    luma: np.ndarray,
    contrast: np.ndarray,
    cuts: list[int],
    config: DetectConfig,
) -> list[Transition]:
    """Transition frame ranges, from gray thumbnails [N, h, w], mean luma [N], luma std [N] and
    the hard cuts already found."""
    black = luma < config.black_luma
    marked = black.copy()
    for start, end in runs(black):
        marked[_fade_ramp_start(luma, contrast, start, config) : start] = True
        marked[end : _fade_ramp_end(luma, contrast, end, config)] = True
    flat = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    # Contrast steps at a hard cut look like a dip; no dissolve can span the cut's big step.
    near_cut = np.zeros(len(luma), dtype=bool)
    for cut in cuts:
        near_cut[max(0, cut - 2) : cut + 2] = True
    for center in _contrast_dips(flat, contrast, config):
        if near_cut[center]:
            continue
        blend = _fit_dissolve(flat, contrast, black, center, config)
        if blend is not None:
            marked[blend[0] : blend[1]] = True
    transitions = []
    for start, end in runs(marked):
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
    return [start + int(np.argmin(depth[start:end])) for start, end in runs(dipping)]


def _fit_dissolve(
    flat: np.ndarray, contrast: np.ndarray, black: np.ndarray, center: int, config: DetectConfig
) -> tuple[int, int] | None:
    """The longest range [s, e) around `center` whose frames fit a linear blend of frame s-1
    into frame e, or None. Longest, because every blended frame must leave the shots.

    All candidate ranges are scored at once, and every distance and residual comes from the
    Gram matrix of the frames around `center`: the cost does not grow with the picture size.
    """
    n, pixels = flat.shape
    base = max(0, center - config.max_dissolve_frames)
    local = flat[base : min(n, center + config.max_dissolve_frames + 2)].astype(np.float64)
    gram = local @ local.T
    sq = np.diag(gram)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0)  # squared distances
    # Every range [s, s + length) that holds `center`, with both sides inside the neighbourhood.
    lengths = np.arange(config.min_dissolve_frames, config.max_dissolve_frames + 1)
    starts = center - np.arange(config.max_dissolve_frames)
    s, length = (m.ravel() for m in np.meshgrid(starts, lengths, indexing="ij"))
    keep = (s <= center) & (s + length > center) & (s - 1 >= base) & (s + length <= n - 1)
    s, length = s[keep], length[keep]
    if len(s) == 0:
        return None
    a, b = s - 1 - base, s + length - base  # local indices of the two sides
    offsets = np.arange(config.max_dissolve_frames)
    valid = offsets[None, :] < length[:, None]  # [ranges, max length]
    inner = np.where(valid, a[:, None] + 1 + offsets, a[:, None] + 1)
    change2 = dist2[a, b]
    # A dissolve moves a little every frame; one big step is a hard cut.
    steps2 = np.where(valid, dist2[inner - 1, inner], 0).max(axis=1)
    steps2 = np.maximum(steps2, dist2[a + length, b])
    black_before = np.concatenate(([0], np.cumsum(black)))
    has_black = black_before[s + length + 1] - black_before[s - 1] > 0
    alpha = np.where(valid, (offsets + 1) / (length[:, None] + 1), 0)
    # |f - a - alpha (b - a)|^2 = |f - a|^2 - 2 alpha <f - a, b - a> + alpha^2 |b - a|^2
    to_a = dist2[inner, a[:, None]]
    projection = gram[inner, b[:, None]] - gram[inner, a[:, None]] - gram[a, b][:, None] + sq[a][:, None]
    residual2 = to_a - 2 * alpha * projection + alpha**2 * change2[:, None]
    residual = (np.sqrt(np.maximum(residual2, 0)) * valid).sum(axis=1) / length / np.sqrt(change2 + 1e-12)
    in_between = np.where(valid, np.minimum(to_a, dist2[inner, b[:, None]]), 0).max(axis=1) / (change2 + 1e-12)
    # Mixing two pictures lowers contrast below what the sides would give.
    sides = (1 - alpha) * contrast[s - 1, None] + alpha * contrast[s + length, None]
    dip = np.where(valid, contrast[inner + base] / np.maximum(sides, 1e-6), np.inf).min(axis=1)
    fits = (
        (change2 >= pixels * config.transition_min_change**2)
        & (steps2 <= config.dissolve_max_step**2 * change2)
        & ~has_black
        & (dip <= config.dissolve_max_contrast_ratio)
        & (residual <= config.transition_max_residual)
        & (in_between >= config.dissolve_min_in_between**2)
    )
    if not fits.any():
        return None
    longest = length[fits].max()
    candidates = np.flatnonzero(fits & (length == longest))
    best = candidates[np.argmin(residual[candidates])]
    # The longest fitting range reaches into the shots when they move little; the blend weight
    # of each frame (its projection on the line from one side to the other) shows where the
    # ramp really is: flat at 0, rising, flat at 1.
    weights = projection[best, : length[best]] / change2[best]
    start, end = _ramp_extent(weights, config.min_dissolve_frames)
    # One frame of margin on each side: a frame barely blended is still not a clean shot frame.
    return int(s[best] + max(0, start - 1)), int(s[best] + min(length[best], end + 1))


def _ramp_extent(weights: np.ndarray, min_length: int) -> tuple[int, int]:
    """[start, end) of the clamped linear ramp that best fits blend weights (least squares)."""
    n = len(weights)
    starts, lengths = (m.ravel() for m in np.meshgrid(np.arange(n), np.arange(min_length, n + 1), indexing="ij"))
    keep = starts + lengths <= n
    starts, lengths = starts[keep], lengths[keep]
    t = np.arange(n)
    model = np.clip((t[None, :] - starts[:, None] + 1) / (lengths[:, None] + 1), 0, 1)
    best = np.argmin(((model - weights[None, :]) ** 2).sum(axis=1))
    return int(starts[best]), int(starts[best] + lengths[best])


def _rms(values: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(values * values, axis=-1))


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, end) ranges of consecutive True values."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
