"""Words the Shapes training captions never use: the unseen-word splits, and how the judge reads them back.

Training captions use the grammar's words (docs/shapes.md, "Captions"). An unseen-word split
(`make-shapes --wording unseen`, validation and test splits only) says the same scenes with words that occur in
no training caption, in every category: other colour and shape names, other phrases for places, sizes and
relations, other sentence frames, whole paraphrased sentences, and Russian. Nothing in training ties "crimson" to
red or "ball" to circle: a model draws them right only through what its frozen language model knows of words.
The judge reads such a caption back to its meaning through the tables below; the model never sees them.
"""

from __future__ import annotations

import random
import re

from omni_gpt2o.data.shapes import CaptionMeaning, Scene, _alternatives, _article, parse_caption

# English words for the grammar's words, none of which occurs in a training caption.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "green": ("emerald", "lime"),
    "blue": ("azure", "navy"),
    "yellow": ("golden", "lemon"),
    "magenta": ("fuchsia", "purple"),
    "cyan": ("turquoise", "aqua"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("ball", "disc"),
    "square": ("box", "block"),
    "triangle": ("pyramid", "wedge"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("tiny", "little"), "large": ("huge", "big")}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "on the left": ("on the west side", "at the western edge"),
    "on the right": ("on the east side", "at the eastern edge"),
    "at the top": ("in the upper half", "up high"),
    "at the bottom": ("in the lower half", "down low"),
    "in the center": ("in the middle", "in the very middle"),
}
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "to the left of": ("west of", "on the west side of"),
    "to the right of": ("east of", "on the east side of"),
    "above": ("over", "higher than"),
    "below": ("beneath", "under"),
}
FRAMES: tuple[str, ...] = ("draw ", "an image showing ", "please paint ")  # sentence frames (prefixes)

# Russian: adjective and noun forms by case (all three shapes are masculine nouns).
RU_COLOURS = {  # nominative, genitive (after "слева от"), instrumental (after "над", "под")
    "red": ("красный", "красного", "красным"),
    "green": ("зелёный", "зелёного", "зелёным"),
    "blue": ("синий", "синего", "синим"),
    "yellow": ("жёлтый", "жёлтого", "жёлтым"),
    "magenta": ("пурпурный", "пурпурного", "пурпурным"),
    "cyan": ("голубой", "голубого", "голубым"),
}
RU_SHAPES = {"circle": ("круг", "круга", "кругом"), "square": ("квадрат", "квадрата", "квадратом"),
             "triangle": ("треугольник", "треугольника", "треугольником")}
RU_SIZES = {"small": "маленький", "large": "большой"}
RU_POSITIONS = {"on the left": "слева", "on the right": "справа", "at the top": "сверху", "at the bottom": "снизу",
                "in the center": "в центре"}
RU_RELATIONS = {"to the left of": ("слева от", 1), "to the right of": ("справа от", 1), "above": ("над", 2),
                "below": ("под", 2)}  # the phrase, and the case of the object after it

WORDINGS: tuple[str, ...] = ("synonyms", "paraphrase", "russian")


def _english(colour: str, shape: str, size: str | None, rng: random.Random) -> str:
    words = ([rng.choice(SIZE_WORDS[size])] if size else []) + [rng.choice(COLOUR_WORDS[colour]),
                                                                 rng.choice(SHAPE_WORDS[shape])]
    return f"{_article(words[0])} {' '.join(words)}"


def _russian(colour: str, shape: str, size: str | None = None, case: int = 0) -> str:
    words = ([RU_SIZES[size]] if size and case == 0 else []) + [RU_COLOURS[colour][case], RU_SHAPES[shape][case]]
    return " ".join(words)


def unseen_caption(scene: Scene, wording: str, rng: random.Random) -> str:
    """The scene said in one of the unseen wordings: "synonyms" (the grammar's frame, other words),
    "paraphrase" (other words in another sentence) or "russian"."""
    objects = scene.objects
    with_size = len(objects) == 1 and rng.random() < 0.5
    if wording == "russian":
        if len(objects) == 1:
            (o,) = objects
            return f"{_russian(o.colour, o.shape, o.size if with_size else None)} {RU_POSITIONS[scene.position]}"
        a, b = objects
        phrase, case = RU_RELATIONS[scene.relation]
        return f"{_russian(a.colour, a.shape)} {phrase} {_russian(b.colour, b.shape, case=case)}"
    if len(objects) == 1:
        (o,) = objects
        thing = _english(o.colour, o.shape, o.size if with_size else None, rng)
        where = rng.choice(POSITION_WORDS[scene.position])
        if wording == "synonyms":
            return f"{rng.choice(FRAMES)}{thing} {where}"
        return f"{where}, {thing}"  # "in the upper half, a crimson ball"
    a, b = objects
    first, second = (_english(o.colour, o.shape, None, rng) for o in (a, b))
    if wording == "synonyms":
        return f"{rng.choice(FRAMES)}{first} {rng.choice(RELATION_WORDS[scene.relation])} {second}"
    # "a navy box, with a crimson ball west of it": B first, A placed relative to it
    return f"{second}, with {first} {rng.choice(RELATION_WORDS[scene.relation])} it"


def wording_of(caption: str) -> str:
    """Which unseen wording a caption is in: Russian (Cyrillic letters), a paraphrase (a comma) or synonyms."""
    if any("а" <= ch <= "я" or ch == "ё" for ch in caption):
        return "russian"
    return "paraphrase" if ", " in caption else "synonyms"


def unseen_captions(scene: Scene, rng: random.Random, k: int = 5) -> list[str]:
    """Up to `k` distinct unseen-word captions of the scene, the wordings taken in turn from a random start."""
    start = rng.randrange(len(WORDINGS))
    out: list[str] = []
    for i in range(4 * k):
        caption = unseen_caption(scene, WORDINGS[(start + i) % len(WORDINGS)], rng)
        if caption not in out:
            out.append(caption)
        if len(out) == k:
            break
    return out


def _inverse(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {word: meaning for meaning, words in table.items() for word in words}


_COLOUR, _SHAPE, _SIZE = _inverse(COLOUR_WORDS), _inverse(SHAPE_WORDS), _inverse(SIZE_WORDS)
_POSITION, _RELATION = _inverse(POSITION_WORDS), _inverse(RELATION_WORDS)
_THING = (rf"an? (?:(?P<size{{n}}>{_alternatives(_SIZE)}) )?(?P<colour{{n}}>{_alternatives(_COLOUR)}) "
          rf"(?P<shape{{n}}>{_alternatives(_SHAPE)})")
_FRAME = f"(?:{_alternatives(FRAMES)})"
_EN_PATTERNS = [
    re.compile(rf"{_FRAME}{_THING.format(n=1)} (?P<position>{_alternatives(_POSITION)})"),
    re.compile(rf"(?P<position>{_alternatives(_POSITION)}), {_THING.format(n=1)}"),
    re.compile(rf"{_FRAME}{_THING.format(n=1)} (?P<relation>{_alternatives(_RELATION)}) {_THING.format(n=2)}"),
    re.compile(rf"{_THING.format(n=2)}, with {_THING.format(n=1)} (?P<relation>{_alternatives(_RELATION)}) it"),
]


def _ru_forms(case: int) -> tuple[dict[str, str], dict[str, str]]:
    return ({forms[case]: c for c, forms in RU_COLOURS.items()}, {forms[case]: s for s, forms in RU_SHAPES.items()})


_RU_NOM, _RU_GEN, _RU_INS = (_ru_forms(case) for case in range(3))
_RU_SIZE = {word: size for size, word in RU_SIZES.items()}
_RU_POS = {word: position for position, word in RU_POSITIONS.items()}
_RU_REL = {phrase: relation for relation, (phrase, _) in RU_RELATIONS.items()}
_RU_ONE = re.compile(rf"(?:(?P<size>{_alternatives(_RU_SIZE)}) )?(?P<colour>{_alternatives(_RU_NOM[0])}) "
                     rf"(?P<shape>{_alternatives(_RU_NOM[1])}) (?P<position>{_alternatives(_RU_POS)})")
_RU_TWO = re.compile(rf"(?P<colour1>{_alternatives(_RU_NOM[0])}) (?P<shape1>{_alternatives(_RU_NOM[1])}) "
                     rf"(?P<relation>{_alternatives(_RU_REL)}) (?P<colour2>\w+) (?P<shape2>\w+)")


def _parse_russian(caption: str) -> CaptionMeaning | None:
    m = _RU_ONE.fullmatch(caption)
    if m:
        size = _RU_SIZE.get(m["size"]) if m["size"] else None
        return CaptionMeaning(((size, _RU_NOM[0][m["colour"]], _RU_NOM[1][m["shape"]]),), _RU_POS[m["position"]], None)
    m = _RU_TWO.fullmatch(caption)
    if not m:
        return None
    relation = _RU_REL[m["relation"]]
    colours, shapes = _RU_GEN if RU_RELATIONS[relation][1] == 1 else _RU_INS
    if m["colour2"] not in colours or m["shape2"] not in shapes:
        return None
    first = (None, _RU_NOM[0][m["colour1"]], _RU_NOM[1][m["shape1"]])
    return CaptionMeaning((first, (None, colours[m["colour2"]], shapes[m["shape2"]])), None, relation)


def parse_unseen(caption: str) -> CaptionMeaning:
    """Read an unseen-word caption back into its meaning; ValueError for text in neither wording."""
    for pattern in _EN_PATTERNS:
        m = pattern.fullmatch(caption)
        if not m:
            continue
        words = m.groupdict()
        things = [(_SIZE[words[f"size{n}"]] if words.get(f"size{n}") else None, _COLOUR[words[f"colour{n}"]],
                   _SHAPE[words[f"shape{n}"]]) for n in (1, 2) if f"colour{n}" in words]
        if "position" in words:
            return CaptionMeaning(tuple(things), _POSITION[words["position"]], None)
        return CaptionMeaning(tuple(things), None, _RELATION[words["relation"]])
    meaning = _parse_russian(caption)
    if meaning is None:
        raise ValueError(f"caption {caption!r} is in neither the Shapes grammar nor its unseen wordings")
    return meaning


def read_caption(caption: str) -> CaptionMeaning:
    """A caption's meaning: the grammar's words, or the unseen ones (docs/shapes.md)."""
    try:
        return parse_caption(caption)
    except ValueError:
        return parse_unseen(caption)
