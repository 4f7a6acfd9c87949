"""Localized-Narratives-style captions for synthetic scenes, as ``png_coco_<split>.json`` records.

A narrator describes a scene in sentences of chunks (:mod:`epng.data.synth.chunks`): an
opening that lists some things, a sentence per group of things (with follow-ups that
refer back to them), and a sentence per stuff region, in random order and wording.
Every thing it names with a position or size uses the words of
:mod:`epng.data.synth.wording`, so the grounding stays correct.
"""

from __future__ import annotations

import numpy as np

from epng.data.synth.chunks import Chunk, grounded, render, ungrounded, words
from epng.data.synth.scene import Scene, Stuff, Thing
from epng.data.synth.wording import (
    NUMBERS,
    ThingDescription,
    absolute_position,
    article,
    plural,
    stuff_noun,
    stuff_relation,
    thing_words,
    unique_descriptions,
)


def _choice(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------- the narrator


class _Narrator:
    """Builds one narrative for a scene. All randomness comes from ``rng``."""

    def __init__(self, scene: Scene, rng: np.random.Generator):
        self.scene = scene
        self.rng = rng
        self.things = [t for t in scene.things if t.area > 0]
        self.stuff = [region for region in scene.stuff if region.area > 0]
        self.desc = unique_descriptions(scene)
        self.sentences: list[list[Chunk]] = []
        self.things_said = False  # a thing was mentioned already ("and also ..." makes sense)
        self.stuff_said = False  # the previous sentence was about stuff ("below that ..." makes sense)

    # -- pieces
    def chance(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def where(self, t: Thing) -> str:
        return absolute_position(self.scene, *t.centroid)

    def pick(self, options: list):
        return _choice(self.rng, options)

    def region_noun(self, region: Stuff) -> Chunk:
        """The name of a stuff region, grounded to it ("sky")."""
        return grounded(region.name, [region.segment_id])

    def mention(self, group: list[Thing]) -> list[Chunk]:
        """Chunks that name a group: "a" + "red circle", or "two blue squares"."""
        t = group[0]
        if len(group) == 1:
            phrase = thing_words(t, self.chance(0.5))
            return [words(article(phrase)), grounded(phrase, [t.segment_id])]
        return [grounded(f"{NUMBERS[len(group)]} {t.colour} {plural(t.shape)}", [g.segment_id for g in group])]

    def mention_list(self, groups: list[list[Thing]]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for k, g in enumerate(groups):
            if 0 < k < len(groups) - 1:
                chunks.append(words(","))
            elif k > 0:
                chunks.append(words("and also" if self.chance(0.5) else "and"))
            chunks += self.mention(g)
        return chunks

    def the_desc(self, d: ThingDescription) -> list[Chunk]:
        """Chunks "the" + "large red circle" + "on the left" (the position kept out of the noun chunk)."""
        t = self.scene.things[d.thing]
        out = [words("the"), grounded(d.noun_phrase, [t.segment_id])]
        if d.position:
            out.append(words(d.position))
        return out

    # -- sentences
    def opening(self, groups: list[list[Thing]]) -> None:
        noun = self.pick(["image", "picture"])
        kind = int(self.rng.integers(4))
        if kind == 0:
            sentence = [words("in this"), ungrounded(noun), words(self.pick(["we can see", "i can see"]))]
            sentence += self.mention_list(groups)
        elif kind == 1:
            sentence = [words("this"), ungrounded(noun), words("shows")] + self.mention_list(groups)
        elif kind == 2:
            sentence = [words("we can see")] + self.mention_list(groups) + [words("in this"), ungrounded(noun)]
        else:
            front = ungrounded(self.pick(["front", "foreground"]))
            lead = self.pick(["we can see", "there is"]) if len(groups[0]) == 1 else "we can see"
            sentence = [words("in the"), front, words(lead), *self.mention_list(groups[:1])]
            groups[1:] = []
        self.sentences.append(sentence + [words(".")])
        self.things_said, self.stuff_said = True, False

    def group_sentence(self, group: list[Thing]) -> None:
        self.stuff_said = False
        t = group[0]
        if len(group) == 1:
            kind = int(self.rng.integers(5))
            mentioned = self.mention(group)
            pos = self.where(t)
            said = {"position"}
            if kind == 0:
                sentence = [words(self.pick(["there is", "there's"])), *mentioned, words(pos)]
            elif kind == 1:
                sentence = [words(f"{pos} we can see"), *mentioned]
            elif kind == 2:
                also = ["we can also see", "i can also see", "and also"]
                sentence = [words(self.pick(also if self.things_said else ["we can see", "i can see"])), *mentioned]
                sentence.append(words(pos))
            elif kind == 3 and t.on_stuff >= 0 and self.scene.stuff[t.on_stuff].area > 0:
                region = self.scene.stuff[t.on_stuff]
                sentence = [words("there is"), *mentioned, words(stuff_relation(region)), self.region_noun(region)]
                said = {"stuff"}
            else:
                sentence = [words(pos), words("there is"), *mentioned]
            self.sentences.append(sentence + [words(".")])
            self.follow_up(t, said | ({"size"} if t.size in mentioned[-1].text else set()))
        else:
            ids = [g.segment_id for g in group]
            kind = int(self.rng.integers(3))
            phrase = f"{NUMBERS[len(group)]} {t.colour} {plural(t.shape)}"
            if kind == 0:
                sentence = [words("there are"), grounded(phrase, ids)]
            elif kind == 1:
                sentence = [words(self.pick(["we can also see", "i can see"])), grounded(phrase, ids)]
            else:
                sentence = [words("and also" if self.things_said else "we can see"), grounded(phrase, ids)]
            self.sentences.append(sentence + [words(".")])
            if self.chance(0.35):
                under = {g.on_stuff for g in group}
                region = self.scene.stuff[under.pop()] if len(under) == 1 and min(under) >= 0 else None
                they = grounded("they", ids)
                if region is not None and region.area > 0:
                    self.sentences.append([they, words(f"are {stuff_relation(region)}"), self.region_noun(region)])
                else:
                    self.sentences.append([they, words(f"are {t.colour}")])
                self.sentences[-1].append(words("."))
            self.disambiguate(group)
        self.things_said = True

    def disambiguate(self, group: list[Thing]) -> None:
        """Sentences like "The blue square on the left is small." for the members of a same-colour, same-shape group."""
        for t in group:
            d = self.desc.get(t.index)
            if d is None or not self.chance(0.8):
                continue
            if d.size is None and t.size != "medium":
                tail = f"is {t.size}"
            elif d.position is None:
                tail = f"is {self.where(t)}"
            elif t.on_stuff >= 0 and self.scene.stuff[t.on_stuff].area > 0:
                region = self.scene.stuff[t.on_stuff]
                relation = [words(f"is {stuff_relation(region)}"), self.region_noun(region), words(".")]
                self.sentences.append(self.the_desc(d) + relation)
                continue
            else:
                tail = "is " + self.pick(["also there", "visible", "in the image"])
            self.sentences.append(self.the_desc(d) + [words(tail), words(".")])

    def beside(self, t: Thing) -> tuple[str, Thing] | None:
        """A uniquely describable thing clearly to the right or left of ``t`` at about the same height."""
        margin = 0.12 * self.scene.width
        for other in self.things:
            if (
                other is t
                or self.desc.get(other.index) is None
                or abs(other.centroid[1] - t.centroid[1]) > 0.2 * self.scene.height
            ):
                continue
            if t.centroid[0] < other.centroid[0] - margin:
                return "to the left of", other
            if t.centroid[0] > other.centroid[0] + margin:
                return "to the right of", other
        return None

    def follow_up(self, t: Thing, said: set[str]) -> None:
        """Sometimes a sentence that refers back to ``t`` ("it", "the square") with a fact not said yet."""
        if not self.chance(0.5):
            return
        same_shape = [other for other in self.things if other.shape == t.shape]
        ref = [grounded("it", [t.segment_id])]
        if len(same_shape) == 1 and self.chance(0.5):
            ref = [words("the"), grounded(t.shape, [t.segment_id])]
        options: list[list[Chunk]] = []
        covered = [self.scene.things[j] for j in t.covers if self.desc.get(j) is not None]
        if covered:
            options.append([words("is in front of")] + self.the_desc(self.desc[covered[0].index]))
        if "stuff" not in said and t.on_stuff >= 0 and self.scene.stuff[t.on_stuff].area > 0:
            region = self.scene.stuff[t.on_stuff]
            options.append([words(f"is {stuff_relation(region)}"), self.region_noun(region)])
        if t.above >= 0 and self.scene.stuff[t.above].area > 0:
            region = self.scene.stuff[t.above]
            options.append([words("is above the"), self.region_noun(region)])
        side = self.beside(t)
        if side is not None:
            options.append([words(f"is {side[0]}")] + self.the_desc(self.desc[side[1].index]))
        if "size" not in said and t.size != "medium":
            options.append([words(f"is {self.pick(['quite ', 'very ', ''])}{t.size}")])
        if "position" not in said:
            options.append([words(f"is {self.where(t)}")])
        if options:
            self.sentences.append(ref + self.pick(options) + [words(".")])

    def shape_plural(self) -> None:
        """A sentence like "The circles are red and blue." when a shape occurs in several colours."""
        by_shape: dict[str, list[Thing]] = {}
        for t in self.things:
            by_shape.setdefault(t.shape, []).append(t)
        for shape, ts in by_shape.items():
            colours = sorted({t.colour for t in ts})
            if len(ts) < 2 or len(colours) < 2 or not self.chance(0.6):
                continue
            ids = [t.segment_id for t in ts]
            listed = ", ".join(colours[:-1]) + " and " + colours[-1]
            if self.chance(0.5):
                sentence = [words("the"), grounded(plural(shape), ids), words(f"are {listed}")]
            else:
                counted = grounded(f"{NUMBERS[len(ts)]} {plural(shape)}", ids)
                sentence = [words("there are"), counted, words("in this"), ungrounded("image")]
            self.sentences.append(sentence + [words(".")])

    def stuff_sentence(self, region: Stuff) -> None:
        det, noun = stuff_noun(region)
        ref = [words(det), grounded(noun, [region.segment_id])]
        kind = int(self.rng.integers(3))
        if region.role == "top":
            lead = self.pick(["at the top we can see", "at the top there is", "on the top we can see"])
            sentence = [words(lead), *ref]
            if region.name == "wall" or kind == 0:
                sentence = [words("in the"), ungrounded("background"), words("there is"), *ref]
        elif region.role == "middle":
            between = "in between there is" if self.stuff_said else "in the middle we can see"
            sentence = [words(self.pick(["in the middle we can see", between, "in the middle there is"])), *ref]
        elif region.role == "bottom":
            if kind == 0 and region.name in ("sand", "snow", "grass"):
                sentence = [words("the"), ungrounded("ground"), words("is covered with"), ref[-1]]
            else:
                below = "below that there is" if self.stuff_said else "at the bottom there is"
                sentence = [words(self.pick(["at the bottom we can see", "at the bottom there is", below])), *ref]
        elif len(self.things) >= 2 and kind == 0:
            shapes = grounded("shapes", [t.segment_id for t in self.things])
            sentence = [words("behind the"), shapes, words("there is"), *ref]
        else:
            lead = self.pick(["we can see", "there is"])
            sentence = [words("in the"), ungrounded("background"), words(lead), *ref]
        self.sentences.append(sentence + [words(".")])
        self.stuff_said = True
        if region.name == "sky" and region.cloudy and self.chance(0.6):
            subject = [grounded("it", [region.segment_id])] if self.chance(0.5) else [words("the"), ref[-1]]
            self.sentences.append(subject + [words("is cloudy"), words(".")])

    # -- the whole narrative
    def narrate(self) -> list[list[Chunk]]:
        groups: dict[tuple[str, str], list[Thing]] = {}
        for t in self.things:
            groups.setdefault((t.shape, t.colour), []).append(t)
        order = list(groups.values())
        if self.chance(0.6):  # narrators often scan left to right
            order.sort(key=lambda g: min(t.centroid[0] for t in g))
        else:
            order = [order[i] for i in self.rng.permutation(len(order))]
        order = [g for g in order if len(order) < 3 or self.chance(0.92)] or order[:1]
        stuff_first = self.chance(0.3)
        if stuff_first:
            for region in self.stuff:
                if self.chance(0.9):
                    self.stuff_sentence(region)
        n_open = min(len(order), int(self.rng.integers(1, 4)))
        if self.chance(0.75):
            first = order[:n_open]
            self.opening(first)
            if len(first) == 1 and len(first[0]) == 1:
                t = first[0][0]
                named = [c.text for c in self.sentences[-1] if c.ids == (t.segment_id,)]
                self.follow_up(t, {"size"} if any(t.size in n for n in named) else set())
            for g in first:
                if len(g) > 1:
                    self.disambiguate(g)
            rest = order[n_open:] if len(first) == n_open else order[len(first) :]
        else:
            rest = order
        for g in rest:
            self.group_sentence(g)
        self.shape_plural()
        if not stuff_first:
            for region in self.stuff:
                if self.chance(0.85):
                    self.stuff_sentence(region)
        return self.sentences


def make_narratives(scene: Scene, rng: np.random.Generator, image_id: int, count: int) -> list[dict]:
    """``count`` narrative records for one scene: ``{image_id, annotator_id, caption, segments}``."""
    records = []
    for _ in range(count):
        sentences = _Narrator(scene, rng).narrate()
        caption, segments = render(sentences)
        records.append(
            {
                "image_id": str(image_id),
                "annotator_id": int(rng.integers(1, 160)),
                "caption": caption,
                "segments": segments,
            }
        )
    return records
