"""Decoding: a raw WebDataset sample -> an example (media array, label, where it came from)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from gandist.data import audio, limits
from gandist.data.health import BadSample

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
AUDIO_KEYS = audio.AUDIO_KEYS


class ImageTransform:
    """PIL image -> float tensor [C, H, W] in [-1, 1], converted to the configured channels and size."""

    def __init__(self, resolution: int, channels: int) -> None:
        self.resolution = resolution
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_unit_range(torch.from_numpy(np.ascontiguousarray(self.to_uint8(image))))

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """PIL image -> uint8 array [C, H, W], converted and resized but not yet scaled.

        The stream batches these and scales whole batches in the training process
        (`to_torch_batch`): the same values as `__call__`, a quarter of the bytes to pass on.
        """
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if image.size != (self.resolution, self.resolution):
            image = TF.center_crop(TF.resize(image, self.resolution), self.resolution)
        pixels = np.asarray(image)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def to_unit_range(pixels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 in [-1, 1], bit for bit what `x.float() / 127.5 - 1` gives."""
    out = torch.empty(pixels.shape, dtype=torch.float32) if out is None else out
    return out.copy_(pixels).div_(127.5).sub_(1.0)


def decode_image(data: bytes, max_pixels: int = limits.MAX_IMAGE_PIXELS) -> Image.Image:
    """Encoded image bytes -> a fully loaded PIL image (errors surface here, not later); an
    image whose header declares more than `max_pixels` is refused before its pixels are decoded
    (`limits.DecodeLimitError`)."""
    return limits.open_image(data, max_pixels)


class AudioTransform:
    """Encoded clip bytes -> array [1, length]; the rate must be `sample_rate`.

    Float32 in [-1, 1]; with `keep_pcm16` (the stream), 16-bit mono clips stay int16 (half the
    bytes to batch and pass on) and are scaled per batch in `to_torch_batch`.
    """

    def __init__(self, sample_rate: int, length: int, keep_pcm16: bool = False) -> None:
        self.sample_rate, self.length, self.keep_pcm16 = sample_rate, length, keep_pcm16

    def __call__(self, data: bytes) -> np.ndarray:
        # Only the frames the clip keeps are decoded: a short file of a long silence costs
        # no more than a clip (`limits.read_clip`; the same values as `audio.clip_array`).
        return limits.read_clip(data, self.sample_rate, self.length, self.keep_pcm16)


def media_transform(
    kind: str,
    *,
    resolution: int,
    channels: int,
    sample_rate: int,
    length: int,
    keep_pcm16: bool = False,
) -> Callable[[Any], np.ndarray]:
    """The per-sample transform of `kind`: an image -> uint8 [C, R, R] (scaled later, per batch),
    clip bytes -> [1, L] float32, or int16 for 16-bit clips with `keep_pcm16`."""
    if kind == "image":
        return ImageTransform(resolution, channels).to_uint8
    return AudioTransform(sample_rate, length, keep_pcm16=keep_pcm16)


def sample_label(sample: dict[str, Any]) -> int:
    """The integer class of a raw sample (`cls` member), -1 when the shard has no labels."""
    value = sample.get("cls")
    if value is None:
        return -1
    return int(value.decode() if isinstance(value, bytes) else value)


class ToExample:
    """A raw WebDataset sample -> {image|audio, label, key, url, position}.

    Decodes only the one media member it needs. Any failure becomes a BadSample naming the
    shard and key, for the handler to count and skip.
    """

    def __init__(
        self,
        transform: Callable[[Any], np.ndarray],
        kind: str = "image",
        max_image_pixels: int = limits.MAX_IMAGE_PIXELS,
    ) -> None:
        self.transform, self.kind = transform, kind
        self.max_image_pixels = max_image_pixels
        self.keys = IMAGE_KEYS if kind == "image" else AUDIO_KEYS

    def decode(self, sample: dict[str, Any]) -> Any:
        """The transformed media member of a raw sample; BadSample naming shard and key if none."""
        key, url = sample.get("__key__", ""), sample.get("__url__", "")
        name = next((k for k in self.keys if k in sample), None)
        if name is None:
            present = ", ".join(k for k in sample if not k.startswith("__")) or "nothing"
            raise BadSample(
                url, key, f"no {self.kind} member ({'/'.join(self.keys)}); has {present}"
            )
        try:
            data = sample[name]
            if self.kind == "image":
                return self.transform(decode_image(data, self.max_image_pixels))
            return self.transform(data)
        except Exception as err:  # any decoder error is this sample's fault, not the stream's
            raise BadSample(url, key, f"{name}: {type(err).__name__}: {err}") from None

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key, url = sample.get("__key__", ""), sample.get("__url__", "")
        value = self.decode(sample)
        try:
            label = sample_label(sample)
        except (TypeError, ValueError) as err:
            raise BadSample(url, key, f"cls: {type(err).__name__}: {err}") from None
        return {
            self.kind: value,
            "label": label,
            "key": key,
            "url": url,
            "role": sample["__role__"],
            "epoch": sample["__epoch__"],
            "position": sample["__position__"],
        }
