"""Bounds on what one sample may cost to decode: an image's pixels, an audio clip's frames.

A few hundred bytes can describe gigabytes: a 263 KB PNG declared 1.3 GB of pixels, a 28 KB
FLAC of silence held 9.6 million samples. These decoders read the size from the file's header
first and refuse (images) or read no more than the clip needs (audio), so one hostile sample
costs a bounded amount of memory and time. Every refusal is a `DecodeLimitError`, a ValueError
that the stream counts as a bad sample, like any other undecodable one.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import soundfile
from PIL import Image

MAX_IMAGE_PIXELS = 1 << 26  # 64 Mpx (8192 x 8192): a 192 MB RGB array
MAX_AUDIO_CHANNELS = 16


class DecodeLimitError(ValueError):
    """A sample whose header asks for more than the decoder's bounds allow."""


def open_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Encoded image bytes -> a fully loaded PIL image, refused before its pixels are decoded
    when its header declares more than `max_pixels` (width x height).

    Pillow itself only warns above `Image.MAX_IMAGE_PIXELS` (89 Mpx) and raises above twice
    that; both become a DecodeLimitError here, and `max_pixels` applies below them. (A limit
    above 2 x Image.MAX_IMAGE_PIXELS also needs Pillow's own raised.)
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we decide below
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise DecodeLimitError(f"image too large: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise DecodeLimitError(
            f"image too large: {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image.load()
    return image


def read_clip(
    data: bytes,
    sample_rate: int,
    length: int,
    keep_pcm16: bool = False,
    max_channels: int = MAX_AUDIO_CHANNELS,
) -> np.ndarray:
    """Encoded clip bytes -> array [1, length]: the centre `length` frames mixed to mono, or the
    whole clip zero-padded at the end; float32 in [-1, 1], or int16 for a 16-bit mono clip with
    `keep_pcm16`. The same values as `gandist.data.audio.clip_array`, but only the frames kept
    are decoded: the rate and channel count come from the header and are checked before any
    frame is read, and the reader seeks to the centre instead of decoding what lies before it.

    Raises ValueError for undecodable data or a rate other than `sample_rate`, and
    DecodeLimitError for more than `max_channels` channels.
    """
    if not data:
        raise ValueError("empty audio file")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as clip:
            if clip.samplerate != sample_rate:
                raise ValueError(
                    f"sample rate {clip.samplerate} Hz, expected data.sample_rate={sample_rate}"
                )
            if clip.channels > max_channels:
                raise DecodeLimitError(
                    f"audio has {clip.channels} channels, over the limit of {max_channels}"
                )
            pcm16 = keep_pcm16 and clip.subtype == "PCM_16" and clip.channels == 1
            if clip.seekable() and clip.frames > length:
                clip.seek((clip.frames - length) // 2)  # the centre, as crop_or_pad takes it
            samples = clip.read(length, dtype="int16" if pcm16 else "float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        detail = re.sub(r"^Error opening <[^>]*>: ", "", str(err))  # the BytesIO repr says nothing
        raise ValueError(f"cannot decode audio: {detail}") from None
    if samples.shape[0] == 0:
        raise ValueError("audio file holds no frames")
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    if len(mono) < length:
        mono = np.pad(mono, (0, length - len(mono)))
    return np.ascontiguousarray(mono)[None]
