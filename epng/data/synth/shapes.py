"""Outlines of the synthetic thing shapes (circle, square, triangle, star, diamond, cross) as pixel masks."""

from __future__ import annotations

import numpy as np


def _polygon_mask(dx: np.ndarray, dy: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Inside test for a polygon that is star-shaped around the origin (vertices px, py)."""
    ang = np.arctan2(py, px)
    order = np.argsort(ang)
    ang, px, py = ang[order], px[order], py[order]
    offs = ang - ang[0]
    rel = (np.arctan2(dy, dx) - ang[0]) % (2 * np.pi)
    k = np.searchsorted(offs, rel, side="right") - 1
    k1 = (k + 1) % len(px)
    ax, ay, bx, by = px[k], py[k], px[k1], py[k1]
    c_p = (bx - ax) * (dy - ay) - (by - ay) * (dx - ax)
    c_o = (bx - ax) * (-ay) - (by - ay) * (-ax)
    return c_p * c_o >= 0


def _shape_vertices(shape: str, r: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    if shape == "square":
        a = np.pi / 4 + np.arange(4) * np.pi / 2
        rad = np.full(4, 1.15 * r)
    elif shape == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        rad = np.full(3, 1.25 * r)
    elif shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.25 * r, 0.5 * r)
    elif shape == "diamond":
        a = np.arange(4) * np.pi / 2
        rad = np.array([0.8, 1.25, 0.8, 1.25]) * r
    elif shape == "cross":
        t, L = 0.36 * r, 1.1 * r
        pts = np.array(
            [(t, t), (L, t), (L, -t), (t, -t), (t, -L), (-t, -L), (-t, -t), (-L, -t), (-L, t), (-t, t), (-t, L), (t, L)]
        )
        a, rad = np.arctan2(pts[:, 1], pts[:, 0]), np.hypot(pts[:, 0], pts[:, 1])
    else:  # pragma: no cover
        raise ValueError(shape)
    a = a + theta
    return rad * np.cos(a), rad * np.sin(a)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, theta: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    px, py = _shape_vertices(shape, r, theta)
    return _polygon_mask(dx, dy, px, py)


def shape_window(cx: float, cy: float, r: float, h: int, w: int):
    ext = 1.3 * r + 1
    x0, x1 = max(0, int(cx - ext)), min(w, int(cx + ext) + 2)
    y0, y1 = max(0, int(cy - ext)), min(h, int(cy + ext) + 2)
    return y0, y1, x0, x1
