"""The embedded dataset: deterministic synthetic aerial scenes with RSICD-style captions.

Neither RSICD nor RSITMD can be downloaded by a program (DATA.md section 1), yet every suite,
test and tutorial needs a dataset that exists on any machine, so this module draws one.

Each image is a scene class from the real vocabulary: a land-cover texture typical of the class
(runway and grass, water and quays, plough stripes ...) plus a group of countable objects
(planes, ships, round tanks ...) whose attributes are what fine-grained captions talk about:
count (1-6), colour, size (small/large), position (nine regions) and, for elongated objects,
orientation. Two rendering domains share classes, objects and vocabulary but not their look:

``target``  the fine-tuning dataset: muted colours, multi-scale texture, sensor grain; five
            captions per image in varied wording that mention different subsets of the
            attributes. Scene-only captions come from a small per-class pool, so exact
            duplicates occur across and within images, as in RSICD.
``source``  a pre-training corpus for a tiny CLIP: brighter, warmer, saturated, posterised and
            smooth; templated lower-case captions naming the class and at most one attribute.

A model pre-trained on ``source`` knows the classes and words but must adapt to a new look and
to captions that combine attributes: zero-shot transfer is partial and fine-tuning helps most on
fine-grained captions, which is what RDB claims to improve.

Determinism is per image: image ``k`` of a stream has its own seeded generator and classes are
dealt in shuffled blocks holding each class once, so a split's first images do not depend on its
size, and the train split does not depend on the sizes of val or test.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rdbench.data.karpathy import write_atomic, write_karpathy_json
from rdbench.data.table import SPLITS
from rdbench.errors import DataError

GENERATOR_VERSION = 1
"""Bump whenever the same arguments would produce different files, so old copies regenerate."""

DOMAINS: tuple[str, ...] = ("target", "source")
JSON_NAME = "dataset_synthetic_rs.json"
DEFAULT_SPLITS: Mapping[str, int] = {"train": 400, "val": 100, "test": 100}

# Entropy words for numpy's SeedSequence, distinct per domain and stream, so the source corpus,
# the in-memory pairs and each written split are independent draws.
_DOMAIN_CODE = {"target": 1, "source": 2}
_STREAM_CODE = {"pairs": 0, "train": 1, "val": 2, "test": 3}

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
_ANGLE = {None: 0.0, "horizontal": 0.0, "vertical": math.pi / 2, "diagonal": math.pi / 4}
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


_OCTAVES = {"target": ((4, 0.5), (8, 0.3), (16, 0.2)), "source": ((3, 1.0),)}


@functools.lru_cache(maxsize=16)
def _noise_basis(size: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Value noise as two small matrix products: ``m @ (grid * w) @ m.T``.

    ``m`` stacks one smoothstep interpolation matrix per octave (size x cells+1 each) and ``w``
    is block-diagonal with the octave weights, so all octaves come from one random draw without
    any per-pixel loop. Target noise has three octaves (fine texture), source one (smooth).
    """
    blocks, weights = [], []
    for cells, weight in _OCTAVES[domain]:
        pos = (np.arange(size) + 0.5) / size * cells
        low = np.minimum(pos.astype(int), cells - 1)
        frac = pos - low
        frac = frac * frac * (3 - 2 * frac)
        matrix = np.zeros((size, cells + 1), np.float32)
        matrix[np.arange(size), low] = 1 - frac
        matrix[np.arange(size), low + 1] = frac
        blocks.append(matrix)
        weights.append(np.full((cells + 1, cells + 1), weight, np.float32))
    total = sum(w.shape[0] for w in weights)
    w_all = np.zeros((total, total), np.float32)
    start = 0
    for w in weights:
        w_all[start:start + w.shape[0], start:start + w.shape[0]] = w
        start += w.shape[0]
    return np.concatenate(blocks, axis=1), w_all


def _rgb(colour) -> np.ndarray:
    return np.asarray(colour, np.float32).reshape(3, 1, 1)


class _Canvas:
    """A float RGB image in [0, 1] with soft-edged shape masks on normalised coordinates, so a
    scene looks the same at any ``image_size``. The domain sets texture scales and edge softness."""

    def __init__(self, size: int, domain: str, rng: np.random.Generator):
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.x, self.y = centres[None, :], centres[:, None]
        self.size, self.domain, self.rng = size, domain, rng
        self.sharp = size / (1.0 if domain == "target" else 2.2)
        # Channels first: broadcasting a mask over a leading axis of 3 is several times faster
        # in numpy than over a trailing one.
        self.img = np.zeros((3, size, size), np.float32)

    def noise(self) -> np.ndarray:
        """Texture in about [0, 1], with the domain's octaves."""
        m, w = _noise_basis(self.size, self.domain)
        return m @ (self.rng.random(w.shape, np.float32) * w) @ m.T

    def blocks(self, cells: int) -> np.ndarray:
        index = np.arange(self.size) * cells // self.size
        return self.rng.random((cells, cells), np.float32)[index][:, index]

    def fill(self, rgb, amount: float = 0.15, mask: np.ndarray | None = None) -> None:
        layer = _rgb(rgb) * (1 + 2 * amount * (self.noise() - 0.5))
        if mask is None:
            self.img[:] = layer
        else:
            self.paint(mask, layer)

    def paint(self, mask: np.ndarray, rgb) -> None:
        # Most shapes cover a few percent of the image: blending only their bounding box is what
        # keeps 5,000 images within seconds.
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        rgb = np.asarray(rgb, np.float32)
        rgb = rgb[:, box[0], box[1]] if rgb.ndim == 3 and rgb.shape[1] > 1 else _rgb(rgb)
        region = self.img[:, box[0], box[1]]
        region += (rgb - region) * mask[box]

    def soft(self, distance: np.ndarray) -> np.ndarray:
        # Anti-aliased coverage; ufuncs with out= avoid np.clip's wrapper, which dominated the
        # cost of the small arrays drawn here.
        cover = 0.5 - distance * self.sharp
        np.maximum(cover, 0.0, out=cover)
        return np.minimum(cover, 1.0, out=cover)

    def shape(self, kind: str, cx, cy, a: float, b: float, angle: float = 0.0) -> np.ndarray:
        """Union of rotated rectangles (half sizes a, b) or ellipses (semi-axes a, b)."""
        cx = np.asarray(cx, np.float32).reshape(-1, 1, 1)
        cy = np.asarray(cy, np.float32).reshape(-1, 1, 1)
        reach = math.hypot(a, b) + 2.0 / self.size  # evaluate only around the shapes
        x0, x1, y0, y1 = (min(self.size, max(0, int(v * self.size))) for v in (
            float(cx.min()) - reach, float(cx.max()) + reach + 1.0 / self.size,
            float(cy.min()) - reach, float(cy.max()) + reach + 1.0 / self.size))
        mask = np.zeros((self.size, self.size), np.float32)
        if x1 <= x0 or y1 <= y0:
            return mask
        dx, dy = self.x[:, x0:x1] - cx, self.y[y0:y1] - cy
        cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        u, v = dx * cos + dy * sin, dy * cos - dx * sin
        if kind == "rect":
            distance = np.maximum(np.abs(u) - a, np.abs(v) - b)
        else:
            distance = (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * min(a, b)
        mask[y0:y1, x0:x1] = self.soft(distance).max(axis=0)
        return mask

    def _along(self, nx: float, ny: float, centre: float, amp: float, phase: float,
               freq: float) -> np.ndarray:
        """Signed offset of each pixel from a (wavy) line perpendicular to (nx, ny). Straight
        axis-aligned lines stay one-dimensional until the end: most strips are roads."""
        dx, dy = self.x - 0.5, self.y - 0.5
        proj = (dx * nx if nx else 0) + (dy * ny if ny else 0) - centre
        if amp:
            proj = proj - amp * np.sin(freq * (dy * nx - dx * ny) + phase)
        return proj

    def _full(self, mask: np.ndarray) -> np.ndarray:
        return np.broadcast_to(mask, (self.size, self.size))

    def strip(self, nx, ny, centre, half, amp=0.0, phase=0.0) -> np.ndarray:
        """A band of half-width ``half`` perpendicular to (nx, ny), optionally meandering."""
        return self._full(self.soft(np.abs(self._along(nx, ny, centre, amp, phase, 9.4)) - half))

    def side(self, nx, ny, offset, amp=0.0, phase=0.0) -> np.ndarray:
        """Everything beyond a (wavy) line in direction (nx, ny): sea, quay, lawn."""
        return self._full(self.soft(-self._along(nx, ny, offset, amp, phase, 12.6)))


def _layout(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Object centres: a compact grid around the position anchor, inside the image."""
    kind = _KINDS[scene.object]
    length = kind.length[scene.size == "large"]
    n, orientation = scene.count, scene.orientation
    if orientation in (None, "diagonal"):
        ex = ey = length * (0.8 if orientation else 1.0)
        nx = min(n, 3)
    else:
        ex, ey = length, length * kind.aspect
        # Elongated objects line up side by side (cars in a lot), except a "line" of boats,
        # which follows its own axis (along the river).
        nx = n if kind.layout == "line" else math.ceil(n / min(n, 3))
        if orientation == "vertical":
            ex, ey = ey, ex
            nx = 1 if kind.layout == "line" else min(n, 3)
    cells = np.arange(n)
    col, row = cells % nx, cells // nx
    dx, dy = ex * 1.3 + kind.gap, ey * 1.3 + kind.gap
    ax, ay = POSITIONS[scene.position]
    cx = ax + (col - col.mean()) * dx + rng.uniform(-0.08, 0.08, n) * dx
    cy = ay + (row - row.mean()) * dy + rng.uniform(-0.08, 0.08, n) * dy
    for c, extent in ((cx, ex), (cy, ey)):  # shift the whole group back inside the frame
        low, high = c.min() - extent / 2 - 0.02, c.max() + extent / 2 + 0.02
        c += max(0.0, -low) - max(0.0, high - 1.0)
    return cx, cy, _ANGLE[orientation]


def _away(scene: Scene, cx, cy, rng) -> tuple[float, float, float]:
    """Unit direction from the object group towards the far side, and how far along it the group
    reaches: water, runways and lawns go there so they never cover the objects."""
    ax, ay = POSITIONS[scene.position]
    vx, vy = 0.5 - ax, 0.5 - ay
    if abs(vx) + abs(vy) < 1e-6:
        vx, vy = ((1, 0), (-1, 0), (0, 1), (0, -1))[int(rng.integers(4))]
    norm = math.hypot(vx, vy)
    nx, ny = vx / norm, vy / norm
    return nx, ny, float(((cx - 0.5) * nx + (cy - 0.5) * ny).max())


def _background(cv: _Canvas, scene: Scene, cx, cy, length: float, rng) -> None:
    label, horizontal = scene.label, scene.orientation != "vertical"
    nx, ny, reach = _away(scene, cx, cy, rng)
    far = 0.5 * (abs(nx) + abs(ny)) - 0.12  # keep at least a strip of the far side visible
    phase = rng.uniform(0, 6.3)
    if label == "airport":
        cv.fill((0.50, 0.54, 0.38), 0.2)
        cv.fill((0.62, 0.62, 0.60), 0.08, cv.shape("rect", cx.mean(), cy.mean(),
                np.ptp(cx) / 2 + length * 0.8, np.ptp(cy) / 2 + length * 0.8))
        centre = min(reach + length * 0.6 + 0.08, far)
        cv.paint(cv.strip(nx, ny, centre, 0.06), (0.30, 0.30, 0.32))
        dashes = np.sin(40 * ((cv.y - 0.5) * nx - (cv.x - 0.5) * ny)) > 0
        cv.paint(cv.strip(nx, ny, centre, 0.006) * dashes, (0.9, 0.9, 0.9))
    elif label == "farmland":
        coord = cv.x if rng.random() < 0.5 else cv.y
        bounds = np.sort(rng.uniform(0, 1, int(rng.integers(2, 6))))
        palette = np.array([(0.45, 0.55, 0.25), (0.62, 0.60, 0.30), (0.52, 0.42, 0.28),
                            (0.35, 0.50, 0.22), (0.70, 0.66, 0.42)], np.float32)
        fields = palette[rng.permutation(5)].T[:, np.searchsorted(bounds, coord) % 5]
        across = cv.y if coord is cv.x else cv.x
        cv.img[:] = fields * (1 + 0.06 * np.sin(across * cv.size * 2.1))
        cv.img *= 0.85 + 0.3 * cv.noise()
    elif label == "forest":
        cv.fill((0.14, 0.30, 0.15), 0.45)
    elif label in ("residential", "industrial"):
        base = (0.60, 0.58, 0.54) if label == "residential" else (0.50, 0.50, 0.50)
        cv.fill(base, 0.1)
        cv.img *= 0.8 + 0.35 * cv.blocks(10 if label == "residential" else 5)
        for offset in rng.uniform(0.1, 0.4) + np.arange(0, 1, 0.33 if label == "residential"
                                                         else 0.5):
            cv.paint(cv.strip(1, 0, offset - 0.5, 0.018), (0.30, 0.30, 0.31))
            cv.paint(cv.strip(0, 1, offset - 0.5, 0.018), (0.30, 0.30, 0.31))
    elif label in ("river", "bridge"):
        cv.fill((0.36, 0.46, 0.26), 0.25)
        along_x = horizontal == (label == "river")  # a bridge crosses its river at right angles
        centre = (cy.mean() if along_x else cx.mean()) - 0.5
        rx, ry = (0, 1) if along_x else (1, 0)
        half = 0.12 if label == "bridge" else max(0.08, length * 0.55)
        amp = 0.0 if label == "bridge" else 0.02
        cv.paint(cv.strip(rx, ry, centre, half + 0.025, amp, phase), (0.30, 0.36, 0.22))
        cv.fill((0.18, 0.30, 0.38), 0.1, cv.strip(rx, ry, centre, half, amp, phase))
        if label == "bridge":
            for c in (cx if along_x else cy):
                cv.paint(cv.strip(ry, rx, c - 0.5, length * 0.06), (0.28, 0.28, 0.29))
    elif label == "parking":
        cv.fill((0.36, 0.36, 0.38), 0.1)
        coord, start = (cv.y, cy.min()) if horizontal else (cv.x, cx.min())
        step = length * _KINDS["car"].aspect * 1.3
        phase_in_step = np.mod((coord - start) / step - 0.5, 1.0)
        cv.paint(cv._full(cv.soft(np.minimum(phase_in_step, 1 - phase_in_step) * step - 0.005)),
                 (0.85, 0.85, 0.82))
        cv.fill((0.30, 0.48, 0.24), 0.2, cv.side(nx, ny, min(reach + 0.12, far)))
    elif label in ("port", "beach"):
        water = (0.12, 0.26, 0.36) if label == "port" else (0.14, 0.42, 0.56)
        if label == "port":
            cv.fill(water, 0.1)
            cv.img *= 1 + 0.05 * np.sin(cv.x * 50 + cv.y * 30)
            offset = min(reach + 0.05, far)
            cv.fill((0.60, 0.60, 0.58), 0.1, cv.side(nx, ny, offset))
            for t in rng.uniform(-0.35, 0.35, 2):
                # Piers: short quays reaching from the land into the water.
                px, py = 0.5 + (offset - 0.06) * nx - t * ny, 0.5 + (offset - 0.06) * ny + t * nx
                cv.paint(cv.shape("rect", px, py, 0.07, 0.015, math.atan2(ny, nx)),
                         (0.60, 0.60, 0.58))
        else:
            cv.fill((0.84, 0.77, 0.58), 0.1)
            offset = min(reach + 0.08, far)
            cv.paint(cv.side(nx, ny, offset - 0.012, 0.015, phase) * 0.7, (0.95, 0.95, 0.95))
            cv.fill(water, 0.1, cv.side(nx, ny, offset, 0.015, phase))
    elif label == "storage_tanks":
        cv.fill((0.64, 0.61, 0.52), 0.15)
        for c in rng.uniform(-0.4, 0.4, 2):
            cv.paint(cv.strip(*((1, 0) if rng.random() < 0.5 else (0, 1)), c, 0.007),
                     (0.35, 0.33, 0.30))
    elif label == "playground":
        cv.fill((0.32, 0.50, 0.26), 0.2)
        beyond = cv.side(nx, ny, min(reach + 0.06, far))
        cv.fill((0.56, 0.55, 0.53), 0.1, beyond)
        cv.img *= 1 - 0.3 * beyond * cv.blocks(8)


def _draw_objects(cv: _Canvas, scene: Scene, cx, cy, angle: float, rng) -> None:
    kind = _KINDS[scene.object]
    length = kind.length[scene.size == "large"]
    a, b = length / 2, length / 2 * kind.aspect
    # Each object's colour varies a little, as real paint and lighting do.
    rgb = np.clip(np.asarray(COLOURS[scene.colour], np.float32) + rng.uniform(-0.04, 0.04, 3), 0, 1)
    cos, sin = math.cos(angle), math.sin(angle)
    shadow = (0.06, 0.06, 0.06)
    if scene.object in ("house", "factory", "tank", "tree", "bridge"):
        off = length * 0.06
        cv.paint(cv.shape("ellipse" if scene.object in ("tank", "tree") else "rect",
                          cx + off, cy + off, a, b, angle) * 0.5, shadow)
    if scene.object == "plane":
        cv.paint(cv.shape("rect", cx, cy, a, 0.08 * length, angle), rgb)
        # Wings span clearly less than the fuselage is long, so the heading stays visible.
        cv.paint(cv.shape("rect", cx + 0.06 * length * cos, cy + 0.06 * length * sin,
                          0.09 * length, 0.34 * length, angle), rgb)
        cv.paint(cv.shape("rect", cx - 0.42 * length * cos, cy - 0.42 * length * sin,
                          0.05 * length, 0.15 * length, angle), rgb)
    elif scene.object in ("car", "house", "factory", "bridge"):
        cv.paint(cv.shape("rect", cx, cy, a, b, angle), rgb)
        if scene.object != "bridge":  # windscreen or roof ridge: a darker line along the axis
            cv.paint(cv.shape("rect", cx, cy, a * 0.9, b * 0.15, angle), rgb * 0.7)
    elif scene.object in ("boat", "ship", "pond", "umbrella"):
        cv.paint(cv.shape("ellipse", cx, cy, a, b, angle), rgb)
        if scene.object == "ship":
            cv.paint(cv.shape("rect", cx - 0.2 * length * cos, cy - 0.2 * length * sin,
                              0.1 * length, b * 0.6, angle), (0.85, 0.85, 0.85))
    elif scene.object in ("tank", "tree"):
        cv.paint(cv.shape("ellipse", cx, cy, a, a), rgb * (0.75 if scene.object == "tank" else 0.8))
        cv.paint(cv.shape("ellipse", cx - a * 0.1, cy - a * 0.1, a * 0.75, a * 0.75), rgb)
    elif scene.object == "track":
        cv.paint(cv.shape("ellipse", cx, cy, a, b, angle), rgb)
        cv.paint(cv.shape("ellipse", cx, cy, a - 0.035, b - 0.035, angle), (0.22, 0.55, 0.22))
        cv.paint(cv.shape("rect", cx, cy, a * 0.5, 0.004, angle), (0.9, 0.9, 0.9))


def _finish(cv: _Canvas) -> np.ndarray:
    """Apply the domain's look: sensor-like target, cartoon-like source."""
    img, rng = cv.img, cv.rng
    grey = img.mean(axis=0)
    if cv.domain == "target":
        # Slightly desaturated, per-image contrast and brightness, then grain; the 255 scale is
        # folded into the coefficients to keep the number of full-image passes small.
        contrast = 255 * rng.uniform(0.9, 1.1)
        offset = 255 * (0.5 + rng.uniform(-0.04, 0.04)) - 0.5 * contrast + 0.5
        # Uniform grain (std 0.03 shared by the channels, 0.012 per channel) looks like sensor
        # noise at this size and costs a quarter of a normal draw.
        grain = rng.random((3, cv.size, cv.size), np.float32) - 0.5
        img = (img * (0.85 * contrast) + (grey * (0.15 * contrast) + offset + 25.5 * grain[0])
               + 10.2 * grain)
    else:  # saturated, brighter (gamma 0.75 as sqrt * sqrt(sqrt)), warm, six levels a channel
        img = np.sqrt(np.clip(grey + (img - grey) * 1.35, 0, 1))
        img = np.round((img * np.sqrt(img) + _rgb((0.06, 0.02, -0.05))) * 6) * (255 / 6) + 0.5
    return np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def render_scene(scene: Scene, rng: np.random.Generator, *, size: int, domain: str) -> np.ndarray:
    """Draw ``scene`` as a ``size`` x ``size`` x 3 uint8 image in the look of ``domain``."""
    cv = _Canvas(size, domain, rng)
    cx, cy, angle = _layout(scene, rng)
    _background(cv, scene, cx, cy, _KINDS[scene.object].length[scene.size == "large"], rng)
    _draw_objects(cv, scene, cx, cy, angle, rng)
    return _finish(cv)


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


def _target_captions(scene: Scene, rng) -> list[str]:
    generic = _CLASS_SPECS[scene.label][3]
    names = [a for a in _ATTR_WEIGHTS if a != "orientation" or scene.orientation]
    weights = np.array([_ATTR_WEIGHTS[a] for a in names])
    captions = [_pick(rng, generic)]
    while len(captions) < 5:
        roll = rng.random()
        if roll < 0.18:  # scene-only, from the shared pool: RSICD's cross-image repeats
            captions.append(_pick(rng, generic))
        elif roll < 0.26:  # the same annotator sentence twice within an image, as in RSICD
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


def captions_for(scene: Scene, rng: np.random.Generator, *, domain: str) -> list[str]:
    """Five captions for ``scene`` in the style of ``domain``."""
    if domain == "target":
        return _target_captions(scene, rng)
    options = _source_captions(scene)
    # Two generic captions and three single-attribute ones, so every source image teaches the
    # class name and a few attribute words.
    attribute_order = rng.permutation(len(options) - 2)[:3] + 2
    return options[:2] + [options[int(i)] for i in attribute_order]


def _class_sequence(n: int, *, seed: int, domain: str, stream: str) -> list[int]:
    """Class index of each image: every block of len(CLASSES) images holds each class once, in
    an order seeded per block, so the sequence is balanced and a prefix-stable function of the
    image index."""
    order: list[int] = []
    for block in range(-(-n // len(CLASSES))):
        rng = np.random.default_rng([seed, _DOMAIN_CODE[domain], _STREAM_CODE[stream], 0, block])
        order.extend(int(c) for c in rng.permutation(len(CLASSES)))
    return order[:n]


@dataclass
class SyntheticPairs:
    """Images with their captions, in memory.

    ``images`` is uint8, N x H x W x 3; ``captions[i]`` holds the five captions of image ``i``;
    ``labels[i]`` its scene class; ``attributes[i]`` what was drawn (object, count, colour, size,
    position, orientation): the ground truth behind each caption, for tests and analyses.
    """

    images: np.ndarray
    captions: list[list[str]]
    labels: list[str]
    attributes: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def _check_common(domain: str, image_size: int, seed: int) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r} (expected one of {', '.join(DOMAINS)})")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer of at least 16, got {image_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _generate(n: int, *, domain: str, image_size: int, seed: int, stream: str) -> SyntheticPairs:
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    captions, labels, attributes = [], [], []
    for index, class_index in enumerate(_class_sequence(n, seed=seed, domain=domain,
                                                        stream=stream)):
        rng = np.random.default_rng([seed, _DOMAIN_CODE[domain], _STREAM_CODE[stream], 1, index])
        scene = sample_scene(CLASSES[class_index], rng)
        images[index] = render_scene(scene, rng, size=image_size, domain=domain)
        captions.append(captions_for(scene, rng, domain=domain))
        labels.append(scene.label)
        attributes.append(asdict(scene))
    return SyntheticPairs(images=images, captions=captions, labels=labels, attributes=attributes)


def generate_pairs(n_images: int, *, domain: str, image_size: int = 64,
                   seed: int = 0) -> SyntheticPairs:
    """Draw ``n_images`` images of one domain with five captions each, in memory.

    Classes are balanced (each block of 12 images holds every class once). Same arguments, same
    arrays and strings; another seed, other ones. This stream is independent of the splits that
    :func:`write_synthetic_dataset` writes, so a ``source`` corpus never repeats a test scene.
    """
    if not isinstance(n_images, int) or n_images < 0:
        raise ValueError(f"n_images must be a non-negative integer, got {n_images!r}")
    _check_common(domain, image_size, seed)
    return _generate(n_images, domain=domain, image_size=image_size, seed=seed, stream="pairs")


def _png_bytes(image: np.ndarray) -> bytes:
    # Fixed compression settings and no metadata: PIL writes no timestamp into PNGs, so the bytes
    # depend only on the pixels (and zlib, which is stable for a fixed level).
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _generator_header(splits: Mapping[str, int], image_size: int, seed: int) -> dict[str, Any]:
    return {"name": "rdbench.data.synthetic", "version": GENERATOR_VERSION, "domain": "target",
            "splits": {name: int(splits[name]) for name in SPLITS if name in splits},
            "image_size": image_size, "seed": seed}


def _is_up_to_date(json_path: Path, header: dict[str, Any]) -> bool:
    """True when ``json_path`` was written by this generator with these arguments and every
    image it lists is still there. A file not written by the generator raises: it may be a real
    dataset that the user pointed to by mistake, and it must not be overwritten."""
    if not json_path.exists():
        return False
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if not isinstance(document, dict) or "rdbench_generator" not in document:
        raise DataError(f"{json_path}: exists but was not written by the synthetic generator; "
                        "refusing to overwrite it (choose another root)")
    if document["rdbench_generator"] != header:
        return False
    images = document.get("images")
    if not isinstance(images, list):
        return False
    folder = json_path.parent / "images"
    return all(isinstance(e, dict) and (folder / str(e.get("filename"))).is_file()
               for e in images)


def write_synthetic_dataset(root: str | os.PathLike[str], *,
                            splits: Mapping[str, int] | None = None, image_size: int = 64,
                            seed: int = 0) -> Path:
    """Write the embedded target-domain dataset in format A under ``root``; return the JSON path.

    Images go to ``root/images/<class>_<NNNN>.png`` (numbered per class over train, val, test,
    as RSICD numbers its files), annotations to ``root/dataset_synthetic_rs.json`` with no
    ``label`` field, so that labels come from the file names exactly as for RSICD. A top-level
    ``rdbench_generator`` field records the arguments and :data:`GENERATOR_VERSION`.

    Calling it again with the same arguments does nothing once the JSON matches and its images
    exist; the images are written before the JSON (each atomically), so an interrupted run
    leaves no JSON and is redone. Different arguments regenerate; stale images from an earlier
    configuration are left in place, since the JSON alone says which files belong to the dataset.
    Same arguments give byte-identical files.
    """
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    for name, count in splits.items():
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (expected one of {', '.join(SPLITS)})")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"split size for {name!r} must be a non-negative integer, "
                             f"got {count!r}")
    _check_common("target", image_size, seed)

    root_path = Path(root)
    json_path = root_path / JSON_NAME
    header = _generator_header(splits, image_size, seed)
    if _is_up_to_date(json_path, header):
        return json_path

    image_folder = root_path / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    per_class = {name: 0 for name in CLASSES}
    entries: list[dict[str, Any]] = []
    for split in SPLITS:  # canonical order, whatever order the mapping came in
        if split not in splits:
            continue
        pairs = _generate(splits[split], domain="target", image_size=image_size, seed=seed,
                          stream=split)
        for image, caption_group, label in zip(pairs.images, pairs.captions, pairs.labels):
            filename = f"{label}_{per_class[label]:04d}.png"
            per_class[label] += 1
            write_atomic(image_folder / filename, _png_bytes(image))
            entries.append({"filename": filename, "split": split, "captions": caption_group})
    return write_karpathy_json(json_path, entries, dataset="synthetic_rs",
                               header={"rdbench_generator": header})


__all__ = ["CLASSES", "DOMAINS", "GENERATOR_VERSION", "JSON_NAME", "POSITIONS", "Scene",
           "SyntheticPairs", "generate_pairs", "write_synthetic_dataset"]
