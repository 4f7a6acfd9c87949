"""Synthetic scenes: textured "stuff" regions with coloured shapes ("things") on top.

A :class:`Scene` holds the rendered RGB image, the panoptic segment-id map and,
for every segment, the attributes that the narrative and referring-expression
generators put into words (shape, colour, size class, position, what it covers).

Everything is drawn with vectorised numpy from one ``numpy.random.Generator``,
so a scene is a pure function of its generator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# ---------------------------------------------------------------- vocabulary

#: thing classes (``isthing = 1``): name -> category id
THING_CLASSES: dict[str, int] = {"circle": 1, "square": 2, "triangle": 3, "star": 4, "diamond": 5, "cross": 6}
#: stuff classes (``isthing = 0``): name -> category id
STUFF_CLASSES: dict[str, int] = {"sky": 101, "grass": 102, "water": 103, "sand": 104, "wall": 105, "road": 106, "snow": 107}
_STUFF_SUPER = {"sky": "sky", "grass": "plant", "water": "water", "sand": "ground", "wall": "wall", "road": "ground", "snow": "ground"}
_STUFF_COLOR = {
    "sky": (110, 165, 235), "grass": (70, 145, 55), "water": (40, 100, 170), "sand": (215, 190, 130),
    "wall": (165, 85, 65), "road": (85, 85, 90), "snow": (235, 240, 248),
}

#: thing colours (flat, saturated, far apart in RGB)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35), "green": (30, 175, 60), "blue": (35, 75, 225), "yellow": (245, 215, 30),
    "purple": (145, 55, 190), "orange": (250, 135, 20), "white": (248, 248, 248), "black": (20, 20, 20),
}
#: thing colours that would blend into a stuff texture and are never drawn on an image that has it
_CLASHES = {
    "sky": {"blue", "white"}, "grass": {"green"}, "water": {"blue"}, "sand": {"yellow", "orange"},
    "wall": {"red", "orange"}, "road": {"black"}, "snow": {"white"},
}
#: size classes: name -> (min, max) radius as a fraction of the image side; "medium" is never said
SIZES: dict[str, tuple[float, float]] = {"small": (0.055, 0.07), "medium": (0.09, 0.11), "large": (0.14, 0.17)}

PLURALS = {"cross": "crosses"}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def plural(noun: str) -> str:
    return PLURALS.get(noun, noun + "s")


def categories() -> list[dict]:
    """The COCO-style ``categories`` list (things first, then stuff)."""
    cats = []
    for name, cid in THING_CLASSES.items():
        cats.append({"id": cid, "name": name, "supercategory": "shape", "isthing": 1, "color": [int(v) for v in _thing_cat_color(cid)]})
    for name, cid in STUFF_CLASSES.items():
        cats.append({"id": cid, "name": name, "supercategory": _STUFF_SUPER[name], "isthing": 0, "color": list(_STUFF_COLOR[name])})
    return cats


def _thing_cat_color(cid: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in (np.array([60, 120, 180]) + 37 * cid) % 256)


# ---------------------------------------------------------------- scene objects


@dataclass
class Thing:
    """One shape instance. Geometry in pixels; ``area``/``bbox``/``centroid`` are of its *visible* pixels."""

    index: int
    shape: str
    colour: str
    size: str  # "small" | "medium" | "large"
    center: tuple[float, float]  # (x, y) as drawn
    radius: float
    segment_id: int = 0
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, w, h
    centroid: tuple[float, float] = (0.0, 0.0)  # x, y
    covers: list[int] = field(default_factory=list)  # indices of things this one partly hides
    on_stuff: int = -1  # index into Scene.stuff of the region under its centre
    above: int = -1  # index into Scene.stuff of the band just below, when the thing lies wholly above it

    @property
    def category_id(self) -> int:
        return THING_CLASSES[self.shape]


@dataclass
class Stuff:
    """One stuff region; ``role`` says where it lies: "top", "middle", "bottom" or "full"."""

    index: int
    name: str
    role: str
    segment_id: int = 0
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    centroid: tuple[float, float] = (0.0, 0.0)
    cloudy: bool = False

    @property
    def category_id(self) -> int:
        return STUFF_CLASSES[self.name]


@dataclass
class Scene:
    height: int
    width: int
    image: np.ndarray  # (H, W, 3) uint8
    id_map: np.ndarray  # (H, W) int64 panoptic segment ids, 0 = void
    things: list[Thing]
    stuff: list[Stuff]

    def segments(self) -> list[Thing | Stuff]:
        """Visible segments, stuff first (in the order of the panoptic json)."""
        return [s for s in self.stuff if s.area > 0] + [t for t in self.things if t.area > 0]


# ---------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1): random values on a grid of ``cell`` pixels, bicubically upsampled."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    up = Image.fromarray(grid).resize((int(gw * cell), int(gh * cell)), Image.BICUBIC)
    return np.asarray(up)[:h, :w]


def _c(colour) -> np.ndarray:
    """A colour (or per-channel factor) as a (3, 1, 1) float32 array, for channel-first maths."""
    return np.asarray(colour, np.float32).reshape(3, 1, 1)


def _mix(base, other, alpha: np.ndarray) -> np.ndarray:
    """(3, h, w): ``base`` blended towards ``other`` by the (h, w) map ``alpha``."""
    b = _c(base)
    return b + (_c(other) - b) * alpha[None]


def _texture(name: str, rng: np.random.Generator, y0: int, y1: int, w: int, img_h: int) -> tuple[np.ndarray, dict]:
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
        tex = _c((55, 125, 40)) + _c((40, 70, 30)) * blades[None] + _c((35, 45, 15)) * patches[None]
    elif name == "water":
        period = s * rng.uniform(0.03, 0.05)
        warp = _smooth_noise(rng, h, w, s / 8) * f32(6.0)
        waves = np.sin(rows * f32(2 * np.pi / period) + warp + np.arange(w, dtype=f32) * f32(0.02))
        crest = np.clip((waves - f32(0.8)) * f32(5), 0, 1) * f32(0.8) + fine * f32(0.05)
        tex = _mix((35, 95, 165), (190, 220, 240), crest) + _c((12, 20, 25)) * waves[None]
    elif name == "sand":
        dunes = _smooth_noise(rng, h, w, s / 4)
        v = (dunes - f32(0.5)) * f32(30) + fine * f32(36)
        v = np.where(rng.random((h, w), dtype=f32) > 0.97, f32(-60), v)
        tex = _c((215, 188, 128)) + _c((1.0, 1.0, 0.8)) * v[None]
    elif name == "wall":
        bh = max(4, int(s * rng.uniform(0.05, 0.07)))
        bw = 2 * bh
        row = (np.arange(y0, y1) // bh)[:, None]
        xs = np.arange(w)[None, :] + (row % 2) * (bw // 2) + int(rng.integers(bw))
        brick_id = (row * 97 + xs // bw) % 211
        shade = rng.uniform(-25, 25, 211).astype(f32)[brick_id] + fine * f32(20)
        mortar = ((np.arange(y0, y1) % bh) < max(1, bh // 6))[:, None] | ((xs % bw) < max(1, bh // 6))
        tex = np.where(mortar[None], _c((205, 200, 190)), _c((160, 80, 62)) + shade[None])
    elif name == "road":
        grain = _smooth_noise(rng, h, w, 3.0)
        v = (grain - f32(0.5)) * f32(40) + fine * f32(25) + np.sin(rows * f32(0.6)) * f32(4)
        tex = _c((80, 80, 86)) + v[None]
    elif name == "snow":
        drift = _smooth_noise(rng, h, w, s / 4) * f32(0.7) + fine * f32(0.1)
        drift = np.where(rng.random((h, w), dtype=f32) > 0.985, f32(-0.3), drift)
        tex = _mix((240, 244, 250), (185, 200, 225), drift)
    else:  # pragma: no cover - vocabulary is fixed
        raise ValueError(name)
    return tex, attrs


# ---------------------------------------------------------------- stuff layout

_TOP = ["sky", "sky", "sky", "wall"]
_GROUND = ["grass", "sand", "water", "snow", "road"]
_MIDDLE = ["water", "grass", "snow"]
_BOTTOM = {"water": ["sand", "grass"], "grass": ["road", "sand"], "snow": ["road"]}
_FULL = ["wall", "grass", "sand", "water", "snow", "road"]


def _boundary(rng: np.random.Generator, w: int, y0: float, amp: float) -> np.ndarray:
    """A wavy horizontal boundary: one y per column."""
    x = np.arange(w, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    wavelength = w * rng.uniform(0.4, 1.2)
    return y0 + amp * np.sin(2 * np.pi * x / wavelength + phase)


def _layout_stuff(rng: np.random.Generator, h: int, w: int) -> tuple[list[str], list[str], np.ndarray]:
    """Stuff names, roles and an (H, W) int8 map of stuff indices."""
    r = rng.random()
    rows = np.arange(h, dtype=np.float32)[:, None]
    if r < 0.2:
        names, roles = [str(rng.choice(_FULL))], ["full"]
        return names, roles, np.zeros((h, w), np.int8)
    if r < 0.65:
        top = str(rng.choice(_TOP))
        ground = [g for g in _GROUND if not (top == "wall" and g == "water")]
        names, roles = [top, str(rng.choice(ground))], ["top", "bottom"]
        amp = 0.0 if top == "wall" else h * rng.uniform(0.0, 0.05)
        b = _boundary(rng, w, h * rng.uniform(0.3, 0.6), amp)
        return names, roles, (rows >= b[None, :]).astype(np.int8)
    mid = str(rng.choice(_MIDDLE))
    names, roles = ["sky", mid, str(rng.choice(_BOTTOM[mid]))], ["top", "middle", "bottom"]
    b1 = _boundary(rng, w, h * rng.uniform(0.25, 0.42), h * rng.uniform(0.0, 0.03))
    b2 = _boundary(rng, w, h * rng.uniform(0.6, 0.75), h * rng.uniform(0.0, 0.05))
    return names, roles, ((rows >= b1[None, :]).astype(np.int8) + (rows >= b2[None, :]).astype(np.int8))


# ---------------------------------------------------------------- shapes


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
        pts = np.array([(t, t), (L, t), (L, -t), (t, -t), (t, -L), (-t, -L), (-t, -t), (-L, -t), (-L, t), (-t, t), (-t, L), (t, L)])
        a, rad = np.arctan2(pts[:, 1], pts[:, 0]), np.hypot(pts[:, 0], pts[:, 1])
    else:  # pragma: no cover
        raise ValueError(shape)
    a = a + theta
    return rad * np.cos(a), rad * np.sin(a)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, theta: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    px, py = _shape_vertices(shape, r, theta)
    return _polygon_mask(dx, dy, px, py)


def _window(cx: float, cy: float, r: float, h: int, w: int):
    ext = 1.3 * r + 1
    x0, x1 = max(0, int(cx - ext)), min(w, int(cx + ext) + 2)
    y0, y1 = max(0, int(cy - ext)), min(h, int(cy + ext) + 2)
    return y0, y1, x0, x1


# ---------------------------------------------------------------- the scene


def _segment_ids(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` distinct ids in [2**16, 2**24): every channel of the PNG is used."""
    ids: list[int] = []
    while len(ids) < n:
        v = int(rng.integers(256**2, 256**3))
        if v not in ids and v % 256 and (v // 256) % 256:
            ids.append(v)
    return ids


def make_scene(rng: np.random.Generator, height: int, width: int | None = None) -> Scene:
    """Draw one random scene of ``height`` x ``width`` pixels (square when width is None)."""
    h, w = height, width or height
    s = min(h, w)
    names, roles, stuff_map = _layout_stuff(rng, h, w)
    image = np.empty((3, h, w), np.float32)  # channel-first while drawing
    stuff: list[Stuff] = []
    for k, (name, role) in enumerate(zip(names, roles)):
        sel = stuff_map == k
        band = np.nonzero(sel.any(axis=1))[0]
        y0, y1 = (int(band[0]), int(band[-1]) + 1) if len(band) else (0, 1)
        tex, attrs = _texture(name, rng, y0, y1, w, h)
        np.copyto(image[:, y0:y1], np.broadcast_to(tex, (3, y1 - y0, w)), where=sel[None, y0:y1])
        stuff.append(Stuff(index=k, name=name, role=role, cloudy=attrs.get("cloudy", False)))

    # things: a few shapes, sometimes 2-3 instances of the same kind
    allowed = [c for c in COLOURS if not any(c in _CLASHES[n] for n in names)]
    n_things = int(rng.choice([2, 3, 3, 4, 4, 5, 6]))
    kinds: list[tuple[str, str]] = []
    if rng.random() < 0.4:
        kind = (str(rng.choice(list(THING_CLASSES))), str(rng.choice(allowed)))
        kinds += [kind] * (3 if rng.random() < 0.3 else 2)
    while len(kinds) < n_things:
        kinds.append((str(rng.choice(list(THING_CLASSES))), str(rng.choice(allowed))))
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]

    owner = np.full((h, w), -1, np.int16)  # index of the thing on top, -1 = stuff
    full_area: list[int] = []
    visible: list[int] = []
    things: list[Thing] = []
    for shape, colour in kinds:
        size = str(rng.choice(list(SIZES), p=[0.35, 0.35, 0.3]))
        for _ in range(30):
            r = s * rng.uniform(*SIZES[size])
            cx, cy = rng.uniform(1.25 * r, w - 1.25 * r), rng.uniform(1.25 * r, h - 1.25 * r)
            theta = float(rng.uniform(-0.3, 0.3)) if shape in ("square", "triangle", "star", "cross") else 0.0
            y0, y1, x0, x1 = _window(cx, cy, r, h, w)
            dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
            dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
            mask = _shape_mask(shape, dx, dy, r, theta)
            under = owner[y0:y1, x0:x1][mask]
            hidden = np.bincount(under[under >= 0], minlength=len(things))
            if all(visible[j] - hidden[j] >= 0.6 * full_area[j] for j in range(len(things))):
                break
        else:
            continue  # no room for this one
        idx = len(things)
        covers = [j for j in range(idx) if hidden[j] >= 0.05 * full_area[j]]
        for j in range(idx):
            visible[j] -= int(hidden[j])
        area = int(mask.sum())
        full_area.append(area)
        visible.append(area)
        win = owner[y0:y1, x0:x1]
        win[mask] = idx
        # flat colour with a soft light gradient and a little grain
        base = np.array(COLOURS[colour], np.float32)
        g = rng.uniform(-1, 1, 2)
        light = np.float32(1.0) + (dx * np.float32(0.1 * g[0] / max(r, 1.0)) + dy * np.float32(0.1 * g[1] / max(r, 1.0)))
        patch = _c(base) * light[None] + rng.normal(0, 4, (1, y1 - y0, x1 - x0)).astype(np.float32)
        # a 1-px darker rim, so that overlapping instances of one colour stay separable
        inner = np.zeros_like(mask)
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        rim = np.float32(0.55) if colour != "black" else np.float32(4.0)
        patch = np.where((mask & ~inner)[None], _c(np.minimum(base * rim + 10, 255)), patch)
        np.copyto(image[:, y0:y1, x0:x1], patch, where=mask[None])
        things.append(Thing(index=idx, shape=shape, colour=colour, size=size, center=(float(cx), float(cy)),
                            radius=float(r), covers=covers,
                            on_stuff=int(stuff_map[min(h - 1, int(cy)), min(w - 1, int(cx))]),
                            above=_band_below(stuff_map[y0:y1, x0:x1][mask], len(stuff))))

    # panoptic ids
    seg_ids = _segment_ids(rng, len(stuff) + len(things))
    for st, sid in zip(stuff, seg_ids):
        st.segment_id = sid
    for t, sid in zip(things, seg_ids[len(stuff):]):
        t.segment_id = sid
    stuff_lut = np.array([st.segment_id for st in stuff], np.int64)
    id_map = stuff_lut[stuff_map]
    if things:
        thing_lut = np.array([t.segment_id for t in things], np.int64)
        id_map = np.where(owner >= 0, thing_lut[np.maximum(owner, 0)], id_map)
    if len(stuff) > 1 and rng.random() < 0.35:  # a thin void band along stuff boundaries, as in COCO
        edge = np.zeros((h, w), bool)
        edge[1:] |= stuff_map[1:] != stuff_map[:-1]
        edge[:-1] |= stuff_map[1:] != stuff_map[:-1]
        id_map[edge & (owner < 0)] = 0

    rgb = np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    scene = Scene(height=h, width=w, image=rgb, id_map=id_map, things=things, stuff=stuff)
    _measure(scene)
    return scene


def _band_below(regions: np.ndarray, n_stuff: int) -> int:
    """Stuff bands are numbered top to bottom: a thing wholly inside band k lies above band k + 1."""
    lo, hi = int(regions.min()), int(regions.max())
    return hi + 1 if lo == hi and hi + 1 < n_stuff else -1


def _measure(scene: Scene) -> None:
    """Fill area, bbox and centroid of every segment from the id map as it will be written."""
    xr = np.arange(scene.width, dtype=np.float64)
    yr = np.arange(scene.height, dtype=np.float64)
    for seg in [*scene.stuff, *scene.things]:
        mask = scene.id_map == seg.segment_id
        per_col = np.count_nonzero(mask, axis=0)
        seg.area = int(per_col.sum())
        if seg.area:
            per_row = np.count_nonzero(mask, axis=1)
            cols, rows = np.nonzero(per_col)[0], np.nonzero(per_row)[0]
            x0, y0 = int(cols[0]), int(rows[0])
            seg.bbox = (x0, y0, int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1)
            seg.centroid = (float(per_col @ xr) / seg.area, float(per_row @ yr) / seg.area)


# ---------------------------------------------------------------- words for positions and identities


def absolute_position(scene: Scene, x: float, y: float) -> str:
    """Where (x, y) lies in the image, in words ("on the left", "at the top right", "in the middle")."""
    col = min(2, int(3 * x / scene.width))
    row = min(2, int(3 * y / scene.height))
    vert = ["at the top", "", "at the bottom"][row]
    horiz = ["left", "", "right"][col]
    if vert and horiz:
        return f"{vert} {horiz}"
    if vert:
        return vert
    if horiz:
        return f"on the {horiz}"
    return "in the middle"


def relative_position(scene: Scene, thing: Thing, others: list[Thing]) -> str | None:
    """The position word that singles ``thing`` out among ``others`` (same description), if any.

    "on the left" = clearly left of every other one, likewise right / top / bottom;
    "in the middle" = between two others with clear gaps. Margin: 8 % of the image side.
    """
    if not others:
        return None
    m = 0.08 * max(scene.width, scene.height)
    x, y = thing.centroid
    ox = [o.centroid[0] for o in others]
    oy = [o.centroid[1] for o in others]
    if x < min(ox) - m:
        return "on the left"
    if x > max(ox) + m:
        return "on the right"
    if y < min(oy) - m:
        return "at the top"
    if y > max(oy) + m:
        return "at the bottom"
    if len(others) == 2 and min(ox) + m < x < max(ox) - m:
        return "in the middle"
    return None


@dataclass(frozen=True)
class ThingDescription:
    """Words that pick out one thing: ``[size] [colour] shape [position]`` (unused parts are None)."""

    thing: int  # index into Scene.things
    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None

    @property
    def noun_phrase(self) -> str:
        """Head noun with its adjectives, e.g. "large red circle"."""
        return " ".join(p for p in (self.size, self.colour, self.shape) if p)

    @property
    def text(self) -> str:
        """The whole description, e.g. "large red circle on the left"."""
        return " ".join(p for p in (self.noun_phrase, self.position) if p)


def _matches(t: Thing, shape: str, colour: str | None, size: str | None) -> bool:
    return t.shape == shape and (colour is None or t.colour == colour) and (size is None or t.size == size)


def referring_descriptions(scene: Scene, thing: Thing) -> list[ThingDescription]:
    """Every description (of the forms below) that fits ``thing`` and no other visible thing.

    Tried in this order: colour+shape, shape, size+colour+shape, size+shape,
    colour+shape+position, shape+position, size+colour+shape+position.
    Size words are only "small" and "large" (a medium thing has no size word).
    """
    visible = [t for t in scene.things if t.area > 0]
    size = thing.size if thing.size != "medium" else None
    attrs = [(thing.colour, None), (None, None)]
    if size:
        attrs += [(thing.colour, size), (None, size)]
    out: list[ThingDescription] = []
    for colour, sz in attrs:
        same = [t for t in visible if _matches(t, thing.shape, colour, sz)]
        if same == [thing]:
            out.append(ThingDescription(thing.index, thing.shape, colour, sz))
    pos_attrs = [(thing.colour, None), (None, None)] + ([(thing.colour, size)] if size else [])
    for colour, sz in pos_attrs:
        same = [t for t in visible if _matches(t, thing.shape, colour, sz)]
        if len(same) < 2:
            continue
        pos = relative_position(scene, thing, [t for t in same if t is not thing])
        if pos:
            out.append(ThingDescription(thing.index, thing.shape, colour, sz, pos))
    return out


def unique_descriptions(scene: Scene) -> dict[int, ThingDescription | None]:
    """For each visible thing (by index), its preferred uniquely identifying description, or None."""
    result: dict[int, ThingDescription | None] = {}
    for t in scene.things:
        if t.area == 0:
            continue
        options = referring_descriptions(scene, t)
        result[t.index] = options[0] if options else None
    return result
