"""The scenes of the embedded dataset: classes, countable objects and the captions about them.

What a synthetic image shows (:class:`Scene`: a class and the count, colour, size, position and
orientation of its object group) and the five captions written about it live here, apart from
how it is drawn (:mod:`rdbench.data.synthetic.render`) and written to disk (:mod:`rdbench.data.synthetic.generator`),
so that the vocabulary can be read and changed in one place. The class names and scene-only
captions follow RSICD's; fine-grained captions name subsets of the attributes in varied wording,
because those are what retrieval must get right and what RDB claims to improve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.16, 0.14), "orange": (0.92, 0.52, 0.12), "yellow": (0.92, 0.84, 0.22),
    "green": (0.28, 0.66, 0.22), "blue": (0.16, 0.32, 0.80), "white": (0.95, 0.95, 0.93),
    "gray": (0.56, 0.57, 0.58), "black": (0.07, 0.07, 0.08)}
# Anchor (x, y) of the object group; corners sit a little inward so large groups still fit.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.27, 0.27), "top": (0.5, 0.25), "top right": (0.73, 0.27),
    "left": (0.25, 0.5), "center": (0.5, 0.5), "right": (0.75, 0.5),
    "bottom left": (0.27, 0.73), "bottom": (0.5, 0.75), "bottom right": (0.73, 0.73)}
_POSITION_WORDS = {  # the first wording is the only one the source domain uses
    "top left": ("in the top left corner", "at the upper left", "in the upper left part"),
    "top": ("at the top", "in the upper part", "near the top"),
    "top right": ("in the top right corner", "at the upper right", "in the upper right part"),
    "left": ("on the left", "on the left side", "at the left"),
    "center": ("in the center", "in the middle", "at the center"),
    "right": ("on the right", "on the right side", "at the right"),
    "bottom left": ("in the bottom left corner", "at the lower left", "in the lower left part"),
    "bottom": ("at the bottom", "in the lower part", "near the bottom"),
    "bottom right": ("in the bottom right corner", "at the lower right",
                     "in the lower right part")}
_ORIENT_WORDS = {"horizontal": ("oriented horizontally", "lying horizontally"),
                 "vertical": ("oriented vertically", "lying vertically"),
                 "diagonal": ("oriented diagonally", "lying at a slant")}
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_HV = ("horizontal", "vertical")


@dataclass(frozen=True)
class _Kind:
    """A countable object: its words, colours, (small, large) length as a fraction of the image,
    width/length ratio, orientations, layout ("grid": rows and columns, "line": one file along
    its axis) and the verbs captions use (plural, singular)."""
    singular: tuple[str, ...]
    plural: tuple[str, ...]
    colours: tuple[str, ...]
    length: tuple[float, float]
    aspect: float
    orientations: tuple[str, ...]
    verbs: tuple[tuple[str, str], ...]
    layout: str = "grid"
    max_count: int = 6
    gap: float = 0.0


_KINDS = {
    "plane": _Kind(("plane", "airplane"), ("planes", "airplanes"),
                   ("white", "gray", "red", "blue", "yellow"), (0.11, 0.17), 0.7,
                   _HV + ("diagonal",), (("are parked", "is parked"), ("stand", "stands"))),
    "pond": _Kind(("pond", "pool"), ("ponds", "pools"), ("blue", "gray", "black"),
                  (0.10, 0.17), 0.75, (), (("lie", "lies"), ("are located", "is located"))),
    "tree": _Kind(("tree",), ("trees",), ("green", "yellow", "red", "orange"), (0.08, 0.13),
                  1.0, (), (("stand", "stands"), ("grow", "grows"))),
    "house": _Kind(("house", "building"), ("houses", "buildings"),
                   ("red", "blue", "white", "orange", "gray"), (0.09, 0.14), 0.65, _HV,
                   (("stand", "stands"), ("are located", "is located"))),
    "boat": _Kind(("boat",), ("boats",), ("white", "red", "yellow", "orange", "green"),
                  (0.08, 0.13), 0.36, _HV, (("are sailing", "is sailing"), ("float", "floats")),
                  layout="line"),
    "car": _Kind(("car", "vehicle"), ("cars", "vehicles"),
                 ("red", "white", "blue", "yellow", "black", "green"), (0.08, 0.11), 0.5, _HV,
                 (("are parked", "is parked"),)),
    "ship": _Kind(("ship", "vessel"), ("ships", "vessels"),
                  ("white", "red", "gray", "orange", "yellow"), (0.13, 0.2), 0.32, _HV,
                  (("are docked", "is docked"), ("are moored", "is moored"))),
    "tank": _Kind(("tank", "storage tank"), ("tanks", "storage tanks"),
                  ("white", "gray", "red", "blue", "green"), (0.08, 0.14), 1.0, (),
                  (("stand", "stands"), ("are located", "is located"))),
    "track": _Kind(("track", "running track"), ("tracks", "running tracks"),
                   ("red", "blue", "orange", "white"), (0.30, 0.44), 0.6, _HV,
                   (("are located", "is located"), ("lie", "lies")), max_count=2, gap=0.03),
    "umbrella": _Kind(("umbrella", "parasol"), ("umbrellas", "parasols"),
                      ("red", "blue", "yellow", "white", "orange", "green"), (0.05, 0.08), 1.0,
                      (), (("are set up", "is set up"), ("stand", "stands")), gap=0.02),
    "bridge": _Kind(("bridge",), ("bridges",), ("gray", "white", "red", "yellow"),
                    (0.36, 0.46), 0.16, _HV, (("are built", "is built"), ("stand", "stands")),
                    max_count=2, gap=0.12),
    "factory": _Kind(("factory building", "warehouse"), ("factory buildings", "warehouses"),
                     ("blue", "white", "gray", "red", "green"), (0.14, 0.22), 0.7, _HV,
                     (("stand", "stands"), ("are located", "is located"))),
}

# class -> (object kind, scene noun phrases, prepositional phrases, scene-only captions)
_CLASS_SPECS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "airport": ("plane", ("an airport",), ("in the airport", "at the airport"), (
        "This is an airport.", "It is an airport with a runway.",
        "An airport with a long runway.", "There is a runway in the airport.")),
    "farmland": ("pond", ("a farmland", "an area of farmland"),
                 ("in the farmland", "among the fields"), (
        "This is a farmland.", "Many pieces of farmland are shown.",
        "Fields of different colors form the farmland.", "It is a piece of farmland.")),
    "forest": ("tree", ("a forest", "a dense forest"), ("in the forest",), (
        "This is a forest.", "Many green trees form a dense forest.", "It is a dense forest.",
        "The forest is full of trees.")),
    "residential": ("house", ("a residential area",), ("in the residential area",), (
        "This is a residential area.", "Many houses are in the residential area.",
        "Roads divide the residential area into blocks.", "It is a residential area.")),
    "river": ("boat", ("a river",), ("on the river",), (
        "This is a river.", "A river runs through the land.", "It is a river with green banks.",
        "A winding river goes through the fields.")),
    "parking": ("car", ("a parking lot",), ("in the parking lot",), (
        "This is a parking lot.", "It is a parking lot.",
        "Parking spaces are marked with white lines.", "A parking lot with parking spaces.")),
    "port": ("ship", ("a port", "a harbor"), ("in the port", "in the harbor"), (
        "This is a port.", "It is a port next to the water.", "A harbor with piers.",
        "Piers stretch into the water of the port.")),
    "storage_tanks": ("tank", ("an oil depot", "a storage area"),
                      ("in the oil depot", "on the ground"), (
        "This is a storage tank area.", "It is an oil depot.", "An oil depot with pipes.",
        "There is a tank farm on the ground.")),
    "playground": ("track", ("a playground",), ("in the playground",), (
        "This is a playground.", "It is a playground with a running track.",
        "A playground surrounded by buildings.", "There is a sports field in the playground.")),
    "beach": ("umbrella", ("a beach",), ("on the beach",), (
        "This is a beach.", "Waves wash the sandy beach.", "It is a beach by the sea.",
        "A yellow beach is next to the blue sea.")),
    "bridge": ("bridge", ("a river crossing", "a river"), ("over the river", "across the river"), (
        "This is a bridge.", "A bridge goes over the river.", "It is a bridge over a river.",
        "A road crosses the river on a bridge.")),
    "industrial": ("factory", ("an industrial area",), ("in the industrial area",), (
        "This is an industrial area.", "It is an industrial area with factories.",
        "Many factories are in the industrial area.", "Roads run between the factories.")),
}
CLASSES: tuple[str, ...] = tuple(_CLASS_SPECS)
"""Scene classes, in the order class indices refer to."""


@dataclass(frozen=True)
class Scene:
    """What one image shows: its class and the attributes of its object group."""
    label: str
    object: str
    count: int
    colour: str
    size: str
    position: str
    orientation: str | None


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_scene(label: str, rng: np.random.Generator) -> Scene:
    """Draw the object attributes of one image of class ``label``."""
    kind_name = _CLASS_SPECS[label][0]
    kind = _KINDS[kind_name]
    size = _pick(rng, ("small", "large"))
    # Six large objects do not fit one region of a small image without overlapping, and
    # overlapping objects would make the count in a caption wrong.
    max_count = min(kind.max_count, 6 if size == "small" else 4)
    return Scene(label, kind_name, int(rng.integers(1, max_count + 1)), _pick(rng, kind.colours),
                 size, _pick(rng, tuple(POSITIONS)),
                 _pick(rng, kind.orientations) if kind.orientations else None)


def _noun_phrase(scene: Scene, attrs: set[str], rng, canonical: bool) -> str:
    kind = _KINDS[scene.object]
    synonym = 0 if canonical else int(rng.integers(len(kind.singular)))
    n = scene.count
    words = [] if "size" not in attrs else [
        _SIZE_WORDS[scene.size][0 if canonical else int(rng.integers(2))]]
    if "colour" in attrs:
        words.append(scene.colour)
    words.append(kind.plural[synonym] if n > 1 else kind.singular[synonym])
    if "count" in attrs:
        det = _NUMBERS[n] if n > 1 or canonical else _pick(rng, ("one", "a single", "a"))
    elif n == 1:
        det = "a"
    else:  # vague quantifiers that stay true for the actual count
        vague = ("", "some", "several", "many" if n >= 4 else "a few")
        det = "" if canonical else _pick(rng, vague)
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return " ".join([det] + words) if det else " ".join(words)


def _fine_caption(scene: Scene, attrs: set[str], rng) -> str:
    label_spec = _CLASS_SPECS[scene.label]
    kind = _KINDS[scene.object]
    noun_phrase = _noun_phrase(scene, attrs, rng, canonical=False)
    plural = scene.count > 1
    verb = _pick(rng, kind.verbs)[0 if plural else 1]
    orient = (" " + _pick(rng, _ORIENT_WORDS[scene.orientation])
              if "orientation" in attrs and scene.orientation else "")
    where = " " + _pick(rng, _POSITION_WORDS[scene.position]) if "position" in attrs else ""
    # Most captions place the objects in the scene; some leave the class implicit, which makes
    # them harder to match by scene type alone ("A pond lies." alone would not be a sentence).
    scene_pp = (" " + _pick(rng, label_spec[2])
                if rng.random() < 0.8 or not (where or orient) else "")
    template = int(rng.integers(5))
    if template == 1:
        text = f"there {'are' if plural else 'is'} {noun_phrase}{orient}{where}{scene_pp}"
    elif template == 2:
        text = f"{_pick(rng, label_spec[1])} with {noun_phrase}{orient}{where}"
    elif template == 3:
        text = f"{noun_phrase}{orient} can be seen{where}{scene_pp}"
    elif template == 4 and where:
        text = f"{where.strip()}, {noun_phrase} {verb}{orient}{scene_pp}"
    else:
        text = f"{noun_phrase} {verb}{orient}{where}{scene_pp}"
    return text[0].upper() + text[1:] + "."


# Weights of the attributes a fine-grained caption mentions: count, colour and position are the
# ones retrieval must get right, size and orientation add variety.
_ATTR_WEIGHTS = {"count": 1.0, "colour": 1.0, "position": 1.0, "size": 0.6, "orientation": 0.6}
_K_CDF = np.cumsum([0.3, 0.35, 0.25])  # a fine caption names 1, 2, 3 or 4 attributes


# The embedded mix of the captions after an image's first: 18 % scene-only, 8 % a repeat of an
# earlier caption, 74 % fine-grained. The premise dial (``detail``) redistributes the 92 % that
# are not repeats between scene-only and fine-grained and leaves the repeats as they are.
_SCENE_ONLY, _REPEAT = 0.18, 0.08
#: The ``detail`` the embedded mix amounts to: the fine-grained share of fresh captions (0.804).
DEFAULT_DETAIL = (1 - _SCENE_ONLY - _REPEAT) / (1 - _REPEAT)


def check_detail(detail: float | None) -> None:
    """The premise dial must be None (the embedded mix) or a number from 0 to 1."""
    if detail is not None and (isinstance(detail, bool) or not isinstance(detail, (int, float))
                               or not 0.0 <= detail <= 1.0):
        raise ValueError(f"detail must be a number from 0 to 1 (or null for the embedded mix), got {detail!r}")


def _target_captions(scene: Scene, rng, detail: float | None = None) -> list[str]:
    generic = _CLASS_SPECS[scene.label][3]
    names = [a for a in _ATTR_WEIGHTS if a != "orientation" or scene.orientation]
    weights = np.array([_ATTR_WEIGHTS[a] for a in names])
    captions = [_pick(rng, generic)]
    # Scene-only below this point of the fresh (non-repeat) draws: 0.18 for the embedded mix,
    # so that ``detail`` None and DEFAULT_DETAIL give the very same captions.
    scene_only = _SCENE_ONLY if detail is None else (1 - _REPEAT) * (1 - detail)
    while len(captions) < 5:
        roll = rng.random()
        repeat = _SCENE_ONLY <= roll < _SCENE_ONLY + _REPEAT
        fresh = roll if roll < _SCENE_ONLY else roll - _REPEAT  # uniform on [0, 0.92) when fresh
        if not repeat and fresh < scene_only:  # scene-only, from the shared pool: RSICD's cross-image repeats
            captions.append(_pick(rng, generic))
        elif repeat:  # the same annotator sentence twice within an image, as in RSICD
            captions.append(_pick(rng, captions))
        else:
            k = min(len(names), 1 + int(np.searchsorted(_K_CDF, rng.random(), side="right")))
            # Weighted sampling without replacement: keep the k largest of u ** (1 / w).
            keys = rng.random(len(names)) ** (1.0 / weights)
            chosen = np.argsort(-keys)[:k]
            captions.append(_fine_caption(scene, {names[i] for i in chosen}, rng))
    return captions


def _source_captions(scene: Scene) -> list[str]:
    scene_np = _CLASS_SPECS[scene.label][1][0]
    attribute_phrases = [_noun_phrase(scene, {"count"}, None, True),
                         _noun_phrase(scene, {"colour"}, None, True),
                         _noun_phrase(scene, {"size"}, None, True),
                         f"{_noun_phrase(scene, set(), None, True)} "
                         f"{_POSITION_WORDS[scene.position][0]}"]
    if scene.orientation:
        attribute_phrases.append(f"{scene.orientation} {_noun_phrase(scene, set(), None, True)}")
    return [f"a satellite image of {scene_np}", f"an aerial photo of {scene_np}"] + [
        f"a satellite image of {scene_np} with {phrase}" for phrase in attribute_phrases]


def captions_for(scene: Scene, rng: np.random.Generator, *, domain: str,
                 detail: float | None = None) -> list[str]:
    """Five captions for ``scene`` in the style of ``domain``.

    ``detail`` (target domain only) is the premise dial (docs/premise.md): the probability that
    a caption after the first, when it is not a repeat, names fine-grained attributes (count,
    colour, size, position, orientation: what only the image resolves) rather than the scene
    alone. 0 leaves every caption matchable from scene words only; 1 makes every fresh caption
    fine-grained. None is the embedded mix, equal to :data:`DEFAULT_DETAIL`; the first caption
    is always scene-only, as RSICD's first sentences mostly are.
    """
    check_detail(detail)
    if domain == "target":
        return _target_captions(scene, rng, detail)
    options = _source_captions(scene)
    # Two generic captions and three single-attribute ones, so every source image teaches the
    # class name and a few attribute words.
    attribute_order = rng.permutation(len(options) - 2)[:3] + 2
    return options[:2] + [options[int(i)] for i in attribute_order]
