"""Words for the things and stuff of a synthetic scene: positions, and descriptions that single a thing out.

A thing is described as ``[size] [colour] shape [position]`` ("large red circle on the
left"); :func:`referring_descriptions` lists the descriptions that fit one thing and no
other visible thing, which the narratives and the referring expressions use.
"""

from __future__ import annotations

from dataclasses import dataclass

from epng.data.synth.scene import Scene, Stuff, Thing

PLURALS = {"cross": "crosses"}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def plural(noun: str) -> str:
    """The plural of a shape's name ("circles", "crosses")."""
    return PLURALS.get(noun, noun + "s")


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


def article(word: str) -> str:
    """The indefinite article for ``word``: "an" before a vowel, else "a"."""
    return "an" if word[:1] in "aeiou" else "a"


def thing_words(thing: Thing, with_size: bool) -> str:
    """``[size] colour shape`` of a thing ("large red circle"); a medium thing gets no size word."""
    size = thing.size if with_size and thing.size != "medium" else None
    return " ".join(p for p in (size, thing.colour, thing.shape) if p)


def stuff_noun(region: Stuff) -> tuple[str, str]:
    """(determiner, noun) for a stuff region: ("the", "sky"), ("a", "wall"), ("", "grass")."""
    if region.name in ("sky",):
        return "the", region.name
    if region.name in ("wall", "road"):
        return "a", region.name
    return "", region.name


def stuff_relation(region: Stuff) -> str:
    """Preposition for a thing seen over this stuff region ("in the" sky, "on the" grass)."""
    return {"sky": "in the", "wall": "in front of the"}.get(region.name, "on the")
