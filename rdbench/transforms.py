"""Transforms (kind ``transform``): what happens to an image between the cache and the model.

Contract of a ``transform/*`` component: calling it with one image, a uint8 tensor
(3, H, W) as the decoded-image cache holds it, and the backbone's ``size`` returns a uint8
tensor (3, size, size). Transforms never normalise: the backbone's mean and std are applied
afterwards, on the device, by ``RetrievalModule.prepare_images``, whatever the augmentation.
Randomness comes from torch's global CPU generator, which the training loader seeds for each
sample from (run seed, epoch, caption index) (:mod:`rdbench.data.loading.order`), so an
augmented run repeats exactly, whatever the worker count, and resumes exactly wherever it was
stopped. A transform must draw from torch (as torchvision's do), not from numpy or Python's
``random``, which are not seeded per sample.

Suites set two slots: ``train_transform`` (default: none, images go in as cached, so results
on the embedded dataset are unchanged) and ``eval_transform`` (default ``transform/resize``, a
no-op when the cache already holds the backbone's size). The train presets are the
augmentations of the public record (docs/method.md, "Hyper-parameters from the public record": HarMA's RandomResizedCrop with scale
0.5-1 and flips; rotations by multiples of 90 degrees, natural for overhead imagery, which has
no canonical "up").
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import torch

from rdbench.registry import REGISTRY, register


class Transform(abc.ABC):
    """Base class of transforms; see the module docstring for the contract."""

    @abc.abstractmethod
    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:  # pragma: no cover - contract
        """Contract method: every registered component overrides it."""


REGISTRY.define_kind("transform", Transform)


@functools.lru_cache(maxsize=1)
def _v2() -> Any:
    from torchvision.transforms import v2  # importable: the rdbench package saw to it at import

    return v2


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(image.shape[-2:]) == (size, size):
        return image
    v2 = _v2()
    return v2.functional.resize(image, [size, size], interpolation=v2.InterpolationMode.BICUBIC,
                                antialias=True)


@register("transform/resize")
class ResizeTransform(Transform):
    """Resize to the backbone's image size (bicubic, antialiased), the evaluation default.

    Leaves an image of the right size untouched, so with the cache at the backbone's size it
    costs nothing and changes nothing.
    """

    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:
        return _resize(image, size)


@register("transform/center-crop")
class CenterCropTransform(Transform):
    """Resize the short side to ``size / crop_fraction``, then crop the centre (CLIP-style
    evaluation); ``crop_fraction`` 1.0 is a plain resize.

    Args:
        crop_fraction: Side of the centre crop as a fraction of the resized short side, in (0, 1].
    """

    def __init__(self, crop_fraction: float = 0.875):
        if not 0 < crop_fraction <= 1:
            raise ValueError("crop_fraction must be in (0, 1]")
        self.crop_fraction = crop_fraction

    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:
        v2 = _v2()
        larger = round(size / self.crop_fraction)
        image = v2.functional.resize(image, [larger], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        return _resize(v2.functional.center_crop(image, [size, size]), size)


@register("transform/random-resized-crop")
class RandomResizedCropTransform(Transform):
    """A random crop of ``scale`` of the area and ``ratio`` aspect, resized to the backbone's size.

    Scale (0.5, 1.0) is HarMA's; torchvision's default (0.08, 1.0) would often keep a patch
    too small to show what a remote-sensing caption describes.

    Args:
        scale: Range ``(low, high)`` of the crop's area as a fraction of the image's.
        ratio: Range ``(low, high)`` of the crop's aspect ratio (width / height).
    """

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio}")
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self._ops: dict[int, Any] = {}

    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:
        if size not in self._ops:
            self._ops[size] = _v2().RandomResizedCrop(size, scale=self.scale, ratio=self.ratio, antialias=True)
        return self._ops[size](image)


@register("transform/flip")
class FlipTransform(Transform):
    """Horizontal and vertical flips, each with its own probability, then the resize.

    Args:
        horizontal: Probability of a horizontal (left-right) flip.
        vertical: Probability of a vertical (top-bottom) flip.
    """

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.5):
        for name, p in (("horizontal", horizontal), ("vertical", vertical)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability, got {p}")
        self.horizontal, self.vertical = horizontal, vertical

    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:
        if self.horizontal and torch.rand(()) < self.horizontal:
            image = image.flip(-1)
        if self.vertical and torch.rand(()) < self.vertical:
            image = image.flip(-2)
        return _resize(image, size)


@register("transform/rotate90")
class Rotate90Transform(Transform):
    """Rotation by 0, 90, 180 or 270 degrees, uniformly: no interpolation, no black corners."""

    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:
        k = int(torch.randint(4, ()))
        return _resize(image.rot90(k, dims=(-2, -1)) if k else image, size)


@register("transform/compose", example={"steps": ["transform/random-resized-crop", "transform/flip"]})
class ComposeTransform(Transform):
    """Apply ``steps`` in order (each step resizes to the backbone's size, so any order works).

    Args:
        steps: The transforms, in the order they are applied; at least one.
    """

    def __init__(self, steps: list[Transform]):
        if not steps:
            raise ValueError("steps must name at least one transform")
        self.steps = list(steps)

    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:
        for step in self.steps:
            image = step(image, size)
        return image


@register("transform/rs-augment")
class RSAugmentTransform(Transform):
    """The remote-sensing train augmentation: random resized crop (scale 0.5-1), horizontal and
    vertical flips (p 0.5 each) and a random multiple of 90 degrees.

    Any part can be switched off (``crop_scale: null``, a probability of 0, ``rotate90: false``),
    which is how an ablation of the augmentation is written.

    Args:
        crop_scale: Area range of the random resized crop; null: a plain resize instead.
        horizontal_flip: Probability of a horizontal flip.
        vertical_flip: Probability of a vertical flip.
        rotate90: Add a random rotation by a multiple of 90 degrees.
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] | None = (0.5, 1.0),
        horizontal_flip: float = 0.5,
        vertical_flip: float = 0.5,
        rotate90: bool = True,
    ):
        self.crop = RandomResizedCropTransform(crop_scale) if crop_scale is not None else ResizeTransform()
        self.flip = FlipTransform(horizontal_flip, vertical_flip)
        self.rotate = Rotate90Transform() if rotate90 else None

    def __call__(self, image: torch.Tensor, size: int) -> torch.Tensor:
        image = self.flip(self.crop(image, size), size)
        return self.rotate(image, size) if self.rotate is not None else image
