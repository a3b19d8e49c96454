"""The fixed caption vocabulary: colour names, shape nouns, texture and effect words.

Captions read like ``"a furry red striped star with a shadow on a checkered floor"``.
Every word comes from the tables below, so a caption can be checked against the scene.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Named object colours (sRGB in [0, 1]); an object's colour is one of these, jittered.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.82, 0.1, 0.08),
    "orange": (0.95, 0.5, 0.08),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.2, 0.65, 0.2),
    "teal": (0.08, 0.55, 0.55),
    "blue": (0.12, 0.3, 0.85),
    "purple": (0.5, 0.2, 0.7),
    "pink": (0.95, 0.5, 0.7),
    "brown": (0.5, 0.3, 0.15),
    "white": (0.93, 0.93, 0.9),
    "grey": (0.5, 0.5, 0.52),
    "black": (0.08, 0.08, 0.09),
}

#: Words for object textures ("flat" has none).
TEXTURE_WORDS = {"flat": "", "gradient": "two-tone", "noise": "speckled", "stripes": "striped"}
#: Material words.
FUR_WORD = "furry"
GLASS_WORD = "glassy"
#: Background phrases; ``floor`` scenes name their floor pattern instead.
BACKGROUND_PHRASES = {
    "gradient": "on a gradient background",
    "noise": "on a mottled background",
    "stripes": "on a striped background",
    "checker": "on a checkered background",
    "tiles": "on a tiled background",
    "bokeh": "in front of a bokeh background",
}
FLOOR_PHRASES = {
    "checker": "on a checkered floor",
    "tiles": "on a tiled floor",
    "stripes": "on a striped floor",
    "noise": "on a speckled floor",
}
EFFECT_PHRASES = {
    (True, False): "with a shadow",
    (False, True): "with a reflection",
    (True, True): "with a shadow and a reflection",
}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def object_phrase(color: str, noun: str, texture: str, fur: bool, glass: bool, shadow: bool, reflection: bool) -> str:
    """``"a furry red striped star with a shadow"``: one object and its effects."""
    words = [FUR_WORD if fur else "", GLASS_WORD if glass else "", color, TEXTURE_WORDS[texture], noun]
    text = " ".join(w for w in words if w)
    effects = EFFECT_PHRASES.get((shadow, reflection))
    text = f"{_article(text)} {text}"
    return f"{text} {effects}" if effects else text


def background_phrase(family: str, pattern: str | None = None) -> str:
    """``"on a tiled floor"`` / ``"on a striped background"``."""
    return FLOOR_PHRASES[pattern or "noise"] if family == "floor" else BACKGROUND_PHRASES[family]


def scene_caption(objects: Sequence[str], background: str) -> str:
    """Join object phrases (back to front) and the background phrase into one caption."""
    if len(objects) == 1:
        listed = objects[0]
    else:
        listed = ", ".join(objects[:-1]) + " and " + objects[-1]
    return f"{listed} {background}"
