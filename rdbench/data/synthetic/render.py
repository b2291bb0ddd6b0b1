"""Drawing the embedded dataset's scenes: textured land cover plus soft-edged object shapes.

A :class:`~rdbench.data.synthetic.scenes.Scene` becomes a uint8 image here. Everything is drawn on
normalised coordinates, so a scene looks the same at any size, and vectorised with numpy
(value noise as matrix products, shapes evaluated only around their bounding boxes), so that a
few thousand images take seconds. Two looks share the drawing: ``target`` (muted, multi-scale
texture, sensor grain) and ``source`` (saturated, smooth, posterised), see
:mod:`rdbench.data.synthetic.generator`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from rdbench.data.synthetic.scenes import _KINDS, COLOURS, POSITIONS, Scene

_ANGLE = {None: 0.0, "horizontal": 0.0, "vertical": math.pi / 2, "diagonal": math.pi / 4}

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
