"""Synthetic scenes: textured "stuff" regions with coloured shapes ("things") on top.

A :class:`Scene` holds the rendered RGB image, the panoptic segment-id map and,
for every segment, the attributes that the narrative and referring-expression
generators put into words (:mod:`epng.data.synth.wording`): shape, colour, size
class, position, what it covers.

Everything is drawn with vectorised numpy from one ``numpy.random.Generator``,
so a scene is a pure function of its generator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from epng.data.synth.shapes import shape_mask, shape_window
from epng.data.synth.textures import channels, stuff_texture

# ---------------------------------------------------------------- vocabulary

#: thing classes (``isthing = 1``): name -> category id
THING_CLASSES: dict[str, int] = {"circle": 1, "square": 2, "triangle": 3, "star": 4, "diamond": 5, "cross": 6}
#: stuff classes (``isthing = 0``): name -> category id
STUFF_CLASSES: dict[str, int] = {
    "sky": 101,
    "grass": 102,
    "water": 103,
    "sand": 104,
    "wall": 105,
    "road": 106,
    "snow": 107,
}
_STUFF_SUPER = {
    "sky": "sky",
    "grass": "plant",
    "water": "water",
    "sand": "ground",
    "wall": "wall",
    "road": "ground",
    "snow": "ground",
}
_STUFF_COLOR = {
    "sky": (110, 165, 235),
    "grass": (70, 145, 55),
    "water": (40, 100, 170),
    "sand": (215, 190, 130),
    "wall": (165, 85, 65),
    "road": (85, 85, 90),
    "snow": (235, 240, 248),
}

#: thing colours (flat, saturated, far apart in RGB)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (30, 175, 60),
    "blue": (35, 75, 225),
    "yellow": (245, 215, 30),
    "purple": (145, 55, 190),
    "orange": (250, 135, 20),
    "white": (248, 248, 248),
    "black": (20, 20, 20),
}
#: thing colours that would blend into a stuff texture and are never drawn on an image that has it
_CLASHES = {
    "sky": {"blue", "white"},
    "grass": {"green"},
    "water": {"blue"},
    "sand": {"yellow", "orange"},
    "wall": {"red", "orange"},
    "road": {"black"},
    "snow": {"white"},
}
#: size classes: name -> (min, max) radius as a fraction of the image side; "medium" is never said
SIZES: dict[str, tuple[float, float]] = {"small": (0.055, 0.07), "medium": (0.09, 0.11), "large": (0.14, 0.17)}


def categories() -> list[dict]:
    """The COCO-style ``categories`` list (things first, then stuff)."""
    cats = []
    for name, cid in THING_CLASSES.items():
        cats.append(
            {
                "id": cid,
                "name": name,
                "supercategory": "shape",
                "isthing": 1,
                "color": [int(v) for v in _thing_cat_color(cid)],
            }
        )
    for name, cid in STUFF_CLASSES.items():
        cats.append(
            {
                "id": cid,
                "name": name,
                "supercategory": _STUFF_SUPER[name],
                "isthing": 0,
                "color": list(_STUFF_COLOR[name]),
            }
        )
    return cats


def _thing_cat_color(cid: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in (np.array([60, 120, 180]) + 37 * cid) % 256)


# ---------------------------------------------------------------- scene objects


@dataclass(kw_only=True)
class Segment:
    """What painting a scene object gives it: its segment id and its *visible* pixels' area,
    ``bbox`` (x, y, w, h) and ``centroid`` (x, y)."""

    segment_id: int = 0
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    centroid: tuple[float, float] = (0.0, 0.0)


@dataclass
class Thing(Segment):
    """One shape instance, geometry in pixels."""

    index: int
    shape: str
    colour: str
    size: str  # "small" | "medium" | "large"
    center: tuple[float, float]  # (x, y) as drawn
    radius: float
    covers: list[int] = field(default_factory=list)  # indices of things this one partly hides
    on_stuff: int = -1  # index into Scene.stuff of the region under its centre
    above: int = -1  # index into Scene.stuff of the band just below, when the thing lies wholly above it

    @property
    def category_id(self) -> int:
        return THING_CLASSES[self.shape]


@dataclass
class Stuff(Segment):
    """One stuff region; ``role`` says where it lies: "top", "middle", "bottom" or "full"."""

    index: int
    name: str
    role: str
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
        tex, attrs = stuff_texture(name, rng, y0, y1, w, h)
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
            y0, y1, x0, x1 = shape_window(cx, cy, r, h, w)
            dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
            dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
            mask = shape_mask(shape, dx, dy, r, theta)
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
        light = np.float32(1.0) + (
            dx * np.float32(0.1 * g[0] / max(r, 1.0)) + dy * np.float32(0.1 * g[1] / max(r, 1.0))
        )
        patch = channels(base) * light[None] + rng.normal(0, 4, (1, y1 - y0, x1 - x0)).astype(np.float32)
        # a 1-px darker rim, so that overlapping instances of one colour stay separable
        inner = np.zeros_like(mask)
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        rim = np.float32(0.55) if colour != "black" else np.float32(4.0)
        patch = np.where((mask & ~inner)[None], channels(np.minimum(base * rim + 10, 255)), patch)
        np.copyto(image[:, y0:y1, x0:x1], patch, where=mask[None])
        things.append(
            Thing(
                index=idx,
                shape=shape,
                colour=colour,
                size=size,
                center=(float(cx), float(cy)),
                radius=float(r),
                covers=covers,
                on_stuff=int(stuff_map[min(h - 1, int(cy)), min(w - 1, int(cx))]),
                above=_band_below(stuff_map[y0:y1, x0:x1][mask], len(stuff)),
            )
        )

    # panoptic ids
    seg_ids = _segment_ids(rng, len(stuff) + len(things))
    for st, sid in zip(stuff, seg_ids):
        st.segment_id = sid
    for t, sid in zip(things, seg_ids[len(stuff) :]):
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
