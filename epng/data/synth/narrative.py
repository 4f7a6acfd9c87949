"""Localized-Narratives-style captions for synthetic scenes, chunked as in ``png_coco_<split>.json``.

A narrative is built as sentences of :class:`Chunk` s (caption text + grounding);
:func:`render` turns them into the caption (sentence case, normal punctuation)
and the ``segments`` list (lower-case utterances with punctuation and
contractions split off, consecutive non-noun chunks of a sentence merged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from epng.data.synth.scene import NUMBERS, Scene, Stuff, Thing, ThingDescription, absolute_position, plural, unique_descriptions


@dataclass(frozen=True)
class Chunk:
    text: str  # as written in the caption, lower-case (capitalised by render)
    ids: tuple[int, ...] = ()
    noun: bool = False

    @property
    def plural(self) -> bool:
        return len(self.ids) >= 2


def T(text: str) -> Chunk:
    """A non-noun chunk."""
    return Chunk(text)


def N(text: str, ids) -> Chunk:
    """A grounded noun chunk."""
    return Chunk(text, tuple(int(i) for i in ids), True)


def U(text: str) -> Chunk:
    """An ungrounded noun chunk (noun=true, no segments)."""
    return Chunk(text, (), True)


_PUNCT = re.compile(r"\s*([.,;!?])")
_CONTRACTION = re.compile(r"(\w)('s|n't|'re|'m)\b")


def utterance(text: str) -> str:
    """Caption text -> utterance: lower-case, punctuation and contractions split off ("cloudy." -> "cloudy .")."""
    text = _CONTRACTION.sub(r"\1 \2", text.lower())
    text = _PUNCT.sub(r" \1", text)
    return " ".join(text.split())


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        if not p:
            continue
        out = p if not out else (out + p if p[0] in ".,;!?" else out + " " + p)
    return out


def render(sentences: list[list[Chunk]]) -> tuple[str, list[dict]]:
    """(caption, segments) of a narrative made of sentences of chunks."""
    captions: list[str] = []
    segments: list[dict] = []
    for sentence in sentences:
        merged: list[Chunk] = []
        for c in sentence:
            if not c.text:
                continue
            if merged and not c.noun and not merged[-1].noun:
                merged[-1] = T(_join([merged[-1].text, c.text]))
            else:
                merged.append(c)
        text = _join([c.text for c in merged])
        text = re.sub(r"\bi\b", "I", text)
        captions.append(text[:1].upper() + text[1:])
        for c in merged:
            segments.append({"utterance": utterance(c.text), "segment_ids": [str(i) for i in c.ids],
                             "plural": c.plural, "noun": c.noun})
    return " ".join(captions), segments


# ---------------------------------------------------------------- wording helpers


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def thing_words(t: Thing, with_size: bool) -> str:
    size = t.size if with_size and t.size != "medium" else None
    return " ".join(p for p in (size, t.colour, t.shape) if p)


def stuff_np(st: Stuff) -> tuple[str, str]:
    """(determiner, noun) for a stuff region: ("the", "sky"), ("a", "wall"), ("", "grass")."""
    if st.name in ("sky",):
        return "the", st.name
    if st.name in ("wall", "road"):
        return "a", st.name
    return "", st.name


def stuff_relation(st: Stuff) -> str:
    """Preposition for a thing seen over this stuff region."""
    return {"sky": "in the", "wall": "in front of the"}.get(st.name, "on the")


def _choice(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------- the narrator


class _Narrator:
    """Builds one narrative for a scene. All randomness comes from ``rng``."""

    def __init__(self, scene: Scene, rng: np.random.Generator):
        self.scene = scene
        self.rng = rng
        self.things = [t for t in scene.things if t.area > 0]
        self.stuff = [s for s in scene.stuff if s.area > 0]
        self.desc = unique_descriptions(scene)
        self.sentences: list[list[Chunk]] = []
        self.things_said = False  # a thing was mentioned already ("and also ..." makes sense)
        self.stuff_said = False  # the previous sentence was about stuff ("below that ..." makes sense)

    # -- pieces
    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def where(self, t: Thing) -> str:
        return absolute_position(self.scene, *t.centroid)

    def mention(self, group: list[Thing]) -> list[Chunk]:
        """"a red circle" / "two blue squares" as (determiner chunk, noun chunk)."""
        t = group[0]
        if len(group) == 1:
            words = thing_words(t, self.p(0.5))
            return [T(article(words)), N(words, [t.segment_id])]
        return [N(f"{NUMBERS[len(group)]} {t.colour} {plural(t.shape)}", [g.segment_id for g in group])]

    def mention_list(self, groups: list[list[Thing]]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for k, g in enumerate(groups):
            if k > 0:
                chunks.append(T("and also" if k == len(groups) - 1 and self.p(0.5) else "and") if k == len(groups) - 1 else T(","))
            chunks += self.mention(g)
        return chunks

    def the_desc(self, d: ThingDescription) -> list[Chunk]:
        """"the large red circle" + "on the left" (position kept out of the noun chunk)."""
        t = self.scene.things[d.thing]
        out = [T("the"), N(d.noun_phrase, [t.segment_id])]
        if d.position:
            out.append(T(d.position))
        return out

    # -- sentences
    def opening(self, groups: list[list[Thing]]) -> None:
        noun = _choice(self.rng, ["image", "picture"])
        kind = int(self.rng.integers(4))
        if kind == 0:
            s = [T("in this"), U(noun), T(_choice(self.rng, ["we can see", "i can see"]))]
            s += self.mention_list(groups)
        elif kind == 1:
            s = [T("this"), U(noun), T("shows")] + self.mention_list(groups)
        elif kind == 2:
            s = [T("we can see")] + self.mention_list(groups) + [T("in this"), U(noun)]
        else:
            s = [T("in the"), U(_choice(self.rng, ["front", "foreground"])), T(_choice(self.rng, ["we can see", "there is"]) if len(groups[0]) == 1 else "we can see")]
            s += self.mention_list(groups[:1])
            groups[1:] = []
        self.sentences.append(s + [T(".")])
        self.things_said, self.stuff_said = True, False

    def group_sentence(self, group: list[Thing]) -> None:
        self.stuff_said = False
        t = group[0]
        if len(group) == 1:
            kind = int(self.rng.integers(5))
            m = self.mention(group)
            pos = self.where(t)
            said = {"position"}
            if kind == 0:
                s = [T(_choice(self.rng, ["there is", "there's"]))] + m + [T(pos)]
            elif kind == 1:
                s = [T(f"{pos} we can see")] + m
            elif kind == 2:
                s = [T(_choice(self.rng, ["we can also see", "i can also see", "and also"] if self.things_said else ["we can see", "i can see"]))] + m + [T(pos)]
            elif kind == 3 and t.on_stuff >= 0 and self.scene.stuff[t.on_stuff].area > 0:
                st = self.scene.stuff[t.on_stuff]
                s = [T("there is")] + m + [T(stuff_relation(st)), N(st.name, [st.segment_id])]
                said = {"stuff"}
            else:
                s = [T(pos), T("there is")] + m
            self.sentences.append(s + [T(".")])
            self.follow_up(t, said | ({"size"} if t.size in m[-1].text else set()))
        else:
            ids = [g.segment_id for g in group]
            kind = int(self.rng.integers(3))
            words = f"{NUMBERS[len(group)]} {t.colour} {plural(t.shape)}"
            if kind == 0:
                s = [T("there are"), N(words, ids)]
            elif kind == 1:
                s = [T(_choice(self.rng, ["we can also see", "i can see"])), N(words, ids)]
            else:
                s = [T("and also" if self.things_said else "we can see"), N(words, ids)]
            self.sentences.append(s + [T(".")])
            if self.p(0.35):
                under = {g.on_stuff for g in group}
                st = self.scene.stuff[under.pop()] if len(under) == 1 and min(under) >= 0 else None
                if st is not None and st.area > 0:
                    self.sentences.append([N("they", ids), T(f"are {stuff_relation(st)}"), N(st.name, [st.segment_id]), T(".")])
                else:
                    self.sentences.append([N("they", ids), T(f"are {t.colour}"), T(".")])
            self.disambiguate(group)
        self.things_said = True

    def disambiguate(self, group: list[Thing]) -> None:
        """"The blue square on the left is small." for members of a same-colour, same-shape group."""
        for t in group:
            d = self.desc.get(t.index)
            if d is None or not self.p(0.8):
                continue
            if d.size is None and t.size != "medium":
                tail = f"is {t.size}"
            elif d.position is None:
                tail = f"is {self.where(t)}"
            elif t.on_stuff >= 0 and self.scene.stuff[t.on_stuff].area > 0:
                st = self.scene.stuff[t.on_stuff]
                self.sentences.append(self.the_desc(d) + [T(f"is {stuff_relation(st)}"), N(st.name, [st.segment_id]), T(".")])
                continue
            else:
                tail = "is " + _choice(self.rng, ["also there", "visible", "in the image"])
            self.sentences.append(self.the_desc(d) + [T(tail), T(".")])

    def beside(self, t: Thing) -> tuple[str, Thing] | None:
        """A uniquely describable thing clearly to the right or left of ``t`` at about the same height."""
        m = 0.12 * self.scene.width
        for o in self.things:
            if o is t or self.desc.get(o.index) is None or abs(o.centroid[1] - t.centroid[1]) > 0.2 * self.scene.height:
                continue
            if t.centroid[0] < o.centroid[0] - m:
                return "to the left of", o
            if t.centroid[0] > o.centroid[0] + m:
                return "to the right of", o
        return None

    def follow_up(self, t: Thing, said: set[str]) -> None:
        """Sometimes a sentence that refers back to ``t`` ("it", "the square") with a fact not said yet."""
        if not self.p(0.5):
            return
        same_shape = [o for o in self.things if o.shape == t.shape]
        ref = [N("it", [t.segment_id])]
        if len(same_shape) == 1 and self.p(0.5):
            ref = [T("the"), N(t.shape, [t.segment_id])]
        options: list[list[Chunk]] = []
        covered = [self.scene.things[j] for j in t.covers if self.desc.get(j) is not None]
        if covered:
            options.append([T("is in front of")] + self.the_desc(self.desc[covered[0].index]))
        if "stuff" not in said and t.on_stuff >= 0 and self.scene.stuff[t.on_stuff].area > 0:
            st = self.scene.stuff[t.on_stuff]
            options.append([T(f"is {stuff_relation(st)}"), N(st.name, [st.segment_id])])
        if t.above >= 0 and self.scene.stuff[t.above].area > 0:
            st = self.scene.stuff[t.above]
            options.append([T("is above the"), N(st.name, [st.segment_id])])
        side = self.beside(t)
        if side is not None:
            options.append([T(f"is {side[0]}")] + self.the_desc(self.desc[side[1].index]))
        if "size" not in said and t.size != "medium":
            options.append([T(f"is {_choice(self.rng, ['quite ', 'very ', ''])}{t.size}")])
        if "position" not in said:
            options.append([T(f"is {self.where(t)}")])
        if options:
            self.sentences.append(ref + _choice(self.rng, options) + [T(".")])

    def shape_plural(self) -> None:
        """"The circles are red and blue." when a shape occurs in several colours."""
        by_shape: dict[str, list[Thing]] = {}
        for t in self.things:
            by_shape.setdefault(t.shape, []).append(t)
        for shape, ts in by_shape.items():
            colours = sorted({t.colour for t in ts})
            if len(ts) < 2 or len(colours) < 2 or not self.p(0.6):
                continue
            ids = [t.segment_id for t in ts]
            listed = ", ".join(colours[:-1]) + " and " + colours[-1]
            if self.p(0.5):
                self.sentences.append([T("the"), N(plural(shape), ids), T(f"are {listed}"), T(".")])
            else:
                self.sentences.append([T("there are"), N(f"{NUMBERS[len(ts)]} {plural(shape)}", ids), T("in this"), U("image"), T(".")])

    def stuff_sentence(self, st: Stuff) -> None:
        det, noun = stuff_np(st)
        ref = [T(det), N(noun, [st.segment_id])]
        kind = int(self.rng.integers(3))
        if st.role == "top":
            lead = _choice(self.rng, ["at the top we can see", "at the top there is", "on the top we can see"])
            s = [T(lead)] + ref
            if st.name == "wall" or kind == 0:
                s = [T("in the"), U("background"), T("there is")] + ref
        elif st.role == "middle":
            s = [T(_choice(self.rng, ["in the middle we can see", "in between there is" if self.stuff_said else "in the middle we can see", "in the middle there is"]))] + ref
        elif st.role == "bottom":
            if kind == 0 and st.name in ("sand", "snow", "grass"):
                s = [T("the"), U("ground"), T("is covered with"), N(noun, [st.segment_id])]
            else:
                s = [T(_choice(self.rng, ["at the bottom we can see", "at the bottom there is", "below that there is" if self.stuff_said else "at the bottom there is"]))] + ref
        else:
            if len(self.things) >= 2 and kind == 0:
                s = [T("behind the"), N("shapes", [t.segment_id for t in self.things]), T("there is")] + ref
            else:
                s = [T("in the"), U("background"), T(_choice(self.rng, ["we can see", "there is"]))] + ref
        self.sentences.append(s + [T(".")])
        self.stuff_said = True
        if st.name == "sky" and st.cloudy and self.p(0.6):
            pron = N("it", [st.segment_id]) if self.p(0.5) else None
            self.sentences.append(([pron] if pron else [T("the"), N("sky", [st.segment_id])]) + [T("is cloudy"), T(".")])

    # -- the whole narrative
    def narrate(self) -> list[list[Chunk]]:
        groups: dict[tuple[str, str], list[Thing]] = {}
        for t in self.things:
            groups.setdefault((t.shape, t.colour), []).append(t)
        order = list(groups.values())
        if self.p(0.6):  # narrators often scan left to right
            order.sort(key=lambda g: min(t.centroid[0] for t in g))
        else:
            order = [order[i] for i in self.rng.permutation(len(order))]
        order = [g for g in order if len(order) < 3 or self.p(0.92)] or order[:1]
        stuff_first = self.p(0.3)
        if stuff_first:
            for st in self.stuff:
                if self.p(0.9):
                    self.stuff_sentence(st)
        n_open = min(len(order), int(self.rng.integers(1, 4)))
        if self.p(0.75):
            first = order[:n_open]
            self.opening(first)
            if len(first) == 1 and len(first[0]) == 1:
                t = first[0][0]
                named = [c.text for c in self.sentences[-1] if c.ids == (t.segment_id,)]
                self.follow_up(t, {"size"} if any(t.size in n for n in named) else set())
            for g in first:
                if len(g) > 1:
                    self.disambiguate(g)
            rest = order[n_open:] if len(first) == n_open else order[len(first):]
        else:
            rest = order
        for g in rest:
            self.group_sentence(g)
        self.shape_plural()
        if not stuff_first:
            for st in self.stuff:
                if self.p(0.85):
                    self.stuff_sentence(st)
        return self.sentences


def make_narratives(scene: Scene, rng: np.random.Generator, image_id: int, count: int) -> list[dict]:
    """``count`` narrative records for one scene (fields of spec section 2)."""
    records = []
    for _ in range(count):
        sentences = _Narrator(scene, rng).narrate()
        caption, segments = render(sentences)
        records.append({"image_id": str(image_id), "annotator_id": int(rng.integers(1, 160)),
                        "caption": caption, "segments": segments})
    return records
