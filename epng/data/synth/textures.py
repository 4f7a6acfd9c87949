"""Textures of the synthetic stuff classes (sky, grass, water, sand, wall, road, snow), drawn with numpy.

Every texture is drawn channel-first, ``(3, h, w)`` float32, so that each numpy
operation runs over long contiguous rows; all randomness comes from the generator passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1): random values on a grid of ``cell`` pixels, bicubically upsampled."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    up = Image.fromarray(grid).resize((int(gw * cell), int(gh * cell)), Image.BICUBIC)
    return np.asarray(up)[:h, :w]


def channels(colour: Sequence[float] | np.ndarray) -> np.ndarray:
    """A colour (or per-channel factor) as a (3, 1, 1) float32 array, for channel-first maths."""
    return np.asarray(colour, np.float32).reshape(3, 1, 1)


def _mix(base, other, alpha: np.ndarray) -> np.ndarray:
    """(3, h, w): ``base`` blended towards ``other`` by the (h, w) map ``alpha``."""
    b = channels(base)
    return b + (channels(other) - b) * alpha[None]


def stuff_texture(name: str, rng: np.random.Generator, y0: int, y1: int, w: int, img_h: int) -> tuple[np.ndarray, dict]:
    """(3, y1 - y0, W) float32 texture of a stuff class for image rows [y0, y1), plus attributes (cloudy).

    Channel-first, so that every numpy operation runs over long contiguous rows.
    """
    h = y1 - y0
    s = max(img_h, w)
    f32 = np.float32
    rows = np.arange(y0, y1, dtype=f32)[:, None]
    fine = rng.random((h, w), dtype=f32) - f32(0.5)
    attrs: dict = {}
    if name == "sky":
        top = np.array([70, 130, 225], f32) + rng.uniform(-10, 10, 3).astype(f32)
        grad = _mix(top, (165, 205, 245), rows / f32(img_h))  # (3, h, 1)
        clouds = _smooth_noise(rng, h, w, s / 5) * f32(0.6) + _smooth_noise(rng, h, w, s / 14) * f32(0.4)
        amount = rng.uniform(0.0, 0.35)
        alpha = np.clip((clouds - f32(0.75 - amount)) * f32(4.0), 0.0, 0.95) + fine * f32(0.03)
        attrs["cloudy"] = bool(amount > 0.18)
        tex = grad + (f32(250) - grad) * alpha[None]
    elif name == "grass":
        blades = np.repeat(_smooth_noise(rng, h // 6 + 1, w, 1.5), 6, axis=0)[:h] - f32(0.5)
        patches = _smooth_noise(rng, h, w, s / 6) + fine * f32(0.8) - f32(0.5)
        tex = channels((55, 125, 40)) + channels((40, 70, 30)) * blades[None] + channels((35, 45, 15)) * patches[None]
    elif name == "water":
        period = s * rng.uniform(0.03, 0.05)
        warp = _smooth_noise(rng, h, w, s / 8) * f32(6.0)
        waves = np.sin(rows * f32(2 * np.pi / period) + warp + np.arange(w, dtype=f32) * f32(0.02))
        crest = np.clip((waves - f32(0.8)) * f32(5), 0, 1) * f32(0.8) + fine * f32(0.05)
        tex = _mix((35, 95, 165), (190, 220, 240), crest) + channels((12, 20, 25)) * waves[None]
    elif name == "sand":
        dunes = _smooth_noise(rng, h, w, s / 4)
        v = (dunes - f32(0.5)) * f32(30) + fine * f32(36)
        v = np.where(rng.random((h, w), dtype=f32) > 0.97, f32(-60), v)
        tex = channels((215, 188, 128)) + channels((1.0, 1.0, 0.8)) * v[None]
    elif name == "wall":
        bh = max(4, int(s * rng.uniform(0.05, 0.07)))
        bw = 2 * bh
        row = (np.arange(y0, y1) // bh)[:, None]
        xs = np.arange(w)[None, :] + (row % 2) * (bw // 2) + int(rng.integers(bw))
        brick_id = (row * 97 + xs // bw) % 211
        shade = rng.uniform(-25, 25, 211).astype(f32)[brick_id] + fine * f32(20)
        mortar = ((np.arange(y0, y1) % bh) < max(1, bh // 6))[:, None] | ((xs % bw) < max(1, bh // 6))
        tex = np.where(mortar[None], channels((205, 200, 190)), channels((160, 80, 62)) + shade[None])
    elif name == "road":
        grain = _smooth_noise(rng, h, w, 3.0)
        v = (grain - f32(0.5)) * f32(40) + fine * f32(25) + np.sin(rows * f32(0.6)) * f32(4)
        tex = channels((80, 80, 86)) + v[None]
    elif name == "snow":
        drift = _smooth_noise(rng, h, w, s / 4) * f32(0.7) + fine * f32(0.1)
        drift = np.where(rng.random((h, w), dtype=f32) > 0.985, f32(-0.3), drift)
        tex = _mix((240, 244, 250), (185, 200, 225), drift)
    else:  # pragma: no cover - vocabulary is fixed
        raise ValueError(name)
    return tex, attrs
