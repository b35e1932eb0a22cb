"""Built-in datasets rendered on the fly, so the demo and tests need no download."""

from __future__ import annotations

import functools
import io
import multiprocessing
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DIGITS = "0123456789"


def _colour_pair(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A random background and foreground colour that differ clearly in brightness."""
    while True:
        bg, fg = rng.integers(0, 256, size=(2, 3))
        # Rec. 601 luma; 90 of 255 keeps every glyph legible whatever the hues.
        luma = lambda c: 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]  # noqa: E731
        if abs(luma(bg) - luma(fg)) > 90:
            return tuple(int(v) for v in bg), tuple(int(v) for v in fg)


def render_glyph(rng: np.random.Generator, char: str, size: int) -> Image.Image:
    """Render one character with random size, stroke, rotation, position and colours."""
    canvas = size * 4  # draw large, then downsample, for anti-aliased edges
    bg, fg = _colour_pair(rng)
    image = Image.new("RGB", (canvas, canvas), bg)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(canvas * rng.uniform(0.65, 0.95)))
    stroke = int(canvas * rng.uniform(0.0, 0.035))
    centre = canvas / 2 + rng.uniform(-0.1, 0.1, size=2) * canvas
    draw.text(
        tuple(centre), char, fill=fg, font=font, anchor="mm", stroke_width=stroke, stroke_fill=fg
    )
    image = image.rotate(rng.uniform(-20, 20), resample=Image.BICUBIC, fillcolor=bg)
    return image.resize((size, size), Image.LANCZOS)


def glyph_sample(
    index: int, size: int = 32, seed: int = 0, charset: str = DIGITS
) -> dict[str, Any]:
    """The WebDataset sample (`png` bytes + integer `cls`) at `index`, deterministic from `seed`.

    Each sample has its own generator seeded by (seed, index), so the result does not depend
    on how the work is split across processes or ordered.
    """
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(charset)))
    buffer = io.BytesIO()
    render_glyph(rng, charset[label], size).save(buffer, format="PNG")
    return {"__key__": f"{index:08d}", "png": buffer.getvalue(), "cls": label}


def glyph_samples(
    num: int, size: int = 32, seed: int = 0, charset: str = DIGITS, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """Yield `num` glyph samples in index order, rendered by `workers` processes."""
    render = functools.partial(glyph_sample, size=size, seed=seed, charset=charset)
    if workers <= 1:
        yield from map(render, range(num))
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(render, range(num), chunksize=64)


# ---- glyph domains: an unpaired two-domain set for image-to-image translation --------------

GLYPH_DOMAINS = ("a", "b")
_DOMAIN_STYLES = {
    # (foreground RGB, background RGB, stroke width as a share of the canvas)
    "a": ((235, 235, 235), (25, 35, 90), (0.0, 0.012)),  # thin light strokes on navy
    "b": ((150, 20, 20), (245, 230, 190), (0.035, 0.055)),  # thick dark-red strokes on cream
}


def render_domain_glyph(rng: np.random.Generator, char: str, size: int, domain: str) -> Image.Image:
    """One character in the style of `domain`: the same random pose as `render_glyph` (size,
    rotation, position) but the domain's colours (jittered) and stroke weight, so a translator
    has to change the style and keep the character."""
    fg_base, bg_base, (stroke_lo, stroke_hi) = _DOMAIN_STYLES[domain]
    jitter = rng.integers(-20, 21, size=(2, 3))
    fg = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(fg_base, jitter[0], strict=True))
    bg = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(bg_base, jitter[1], strict=True))
    canvas = size * 4
    image = Image.new("RGB", (canvas, canvas), bg)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(canvas * rng.uniform(0.65, 0.9)))
    stroke = int(canvas * rng.uniform(stroke_lo, stroke_hi))
    centre = canvas / 2 + rng.uniform(-0.08, 0.08, size=2) * canvas
    draw.text(
        tuple(centre), char, fill=fg, font=font, anchor="mm", stroke_width=stroke, stroke_fill=fg
    )
    image = image.rotate(rng.uniform(-15, 15), resample=Image.BICUBIC, fillcolor=bg)
    return image.resize((size, size), Image.LANCZOS)


def domain_glyph_sample(
    index: int, domain: str, size: int = 32, seed: int = 0, charset: str = DIGITS
) -> dict[str, Any]:
    """Sample `index` of glyph domain `domain` (`png` + `cls`); the domains draw from
    independent streams, so no sample of A has a partner in B (the set is unpaired)."""
    rng = np.random.default_rng([seed, GLYPH_DOMAINS.index(domain), index])
    label = int(rng.integers(len(charset)))
    buffer = io.BytesIO()
    render_domain_glyph(rng, charset[label], size, domain).save(buffer, format="PNG")
    return {"__key__": f"{domain}{index:08d}", "png": buffer.getvalue(), "cls": label}


def domain_glyph_samples(
    num: int, domain: str, size: int = 32, seed: int = 0, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """Yield `num` samples of glyph domain `domain` in index order, rendered by `workers`."""
    render = functools.partial(domain_glyph_sample, domain=domain, size=size, seed=seed)
    if workers <= 1:
        yield from map(render, range(num))
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(render, range(num), chunksize=64)


# ---- tones: a labelled audio set ---------------------------------------------------------

TONE_CLASSES = ("sine", "organ", "brass", "pluck", "bell", "kick", "snare", "hihat")
TONE_RATE_HZ = 16000
TONE_LENGTH = 16384


def _envelope(num: int, rate_hz: int, attack_s: float, decay_s: float) -> np.ndarray:
    """Linear attack then exponential decay, [num]."""
    t = np.arange(num) / rate_hz
    attack = np.clip(t / max(attack_s, 1e-4), 0.0, 1.0)
    return attack * np.exp(-np.maximum(t - attack_s, 0.0) / decay_s)


def _harmonics(
    t: np.ndarray, freq_hz: float, amplitudes: list[float], decay_s: list[float]
) -> np.ndarray:
    out = np.zeros_like(t)
    for n, (amp, decay) in enumerate(zip(amplitudes, decay_s, strict=True), start=1):
        if n * freq_hz < TONE_RATE_HZ / 2:  # no aliased partials
            out += amp * np.sin(2 * np.pi * n * freq_hz * t) * np.exp(-t / decay)
    return out


def render_tone(rng: np.random.Generator, label: int, num: int = TONE_LENGTH) -> np.ndarray:
    """One note or hit of class `TONE_CLASSES[label]`, float32 [num] in [-1, 1], at 16 kHz."""
    rate = TONE_RATE_HZ
    # Up to 0.15 s of silence before the onset (less in clips shorter than a second).
    onset = int(rng.uniform(0.0, 0.15) * min(rate, num))
    n = num - onset
    t = np.arange(n) / rate
    freq = 440.0 * 2 ** ((rng.integers(36, 85) - 69) / 12)  # MIDI notes C2..C6
    kind = TONE_CLASSES[label]
    if kind == "sine":
        wave = np.sin(2 * np.pi * freq * t) * _envelope(n, rate, 0.02, rng.uniform(0.3, 0.8))
    elif kind == "organ":  # odd harmonics, sustained
        wave = _harmonics(t, freq, [1, 0, 1 / 3, 0, 1 / 5, 0, 1 / 7], [9.0] * 7)
        wave *= _envelope(n, rate, 0.01, 2.0)
    elif kind == "brass":  # all harmonics 1/k, slow attack
        wave = _harmonics(t, freq, [1 / k for k in range(1, 11)], [1.5] * 10)
        wave *= _envelope(n, rate, 0.08, 0.8)
    elif kind == "pluck":  # bright start, upper partials die first
        amps = [1 / k for k in range(1, 13)]
        wave = _harmonics(t, freq, amps, [0.6 / k for k in range(1, 13)])
        wave *= _envelope(n, rate, 0.002, 1.0)
    elif kind == "bell":  # FM with an inharmonic ratio
        index = 3.0 * np.exp(-t / 0.5)
        wave = np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * freq * 1.4 * t))
        wave *= _envelope(n, rate, 0.002, rng.uniform(0.4, 0.9))
    elif kind == "kick":  # a sine swept down from ~3x its pitch
        base = freq / 4
        sweep = base * (1 + 2 * np.exp(-t / 0.03))
        wave = np.sin(2 * np.pi * np.cumsum(sweep) / rate) * _envelope(n, rate, 0.001, 0.15)
    elif kind == "snare":
        noise = rng.standard_normal(n) * _envelope(n, rate, 0.001, 0.08)
        tone = np.sin(2 * np.pi * (freq / 2) * t) * _envelope(n, rate, 0.001, 0.05)
        wave = 0.6 * noise + 0.5 * tone
    else:  # hihat: noise differenced twice (a crude high-pass), very short
        noise = np.diff(rng.standard_normal(n + 2), n=2) / 4
        wave = noise * _envelope(n, rate, 0.0005, rng.uniform(0.02, 0.06))
    wave = wave / max(float(np.abs(wave).max()), 1e-6) * rng.uniform(0.3, 0.9)
    return np.concatenate([np.zeros(onset), wave]).astype(np.float32)


def tone_sample(index: int, seed: int = 0, length: int = TONE_LENGTH) -> dict[str, Any]:
    """The WebDataset sample (`flac` bytes + integer `cls`) at `index`, deterministic from `seed`:
    a clip of `length` samples at 16 kHz."""
    from gandist.data.audio import encode_flac

    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(TONE_CLASSES)))
    clip = render_tone(rng, label, length)
    return {"__key__": f"{index:08d}", "flac": encode_flac(clip, TONE_RATE_HZ), "cls": label}


def tone_samples(
    num: int, seed: int = 0, workers: int = 1, length: int = TONE_LENGTH
) -> Iterator[dict[str, Any]]:
    """Yield `num` tone samples of `length` samples in index order, rendered by `workers` processes."""
    render = functools.partial(tone_sample, seed=seed, length=length)
    if workers <= 1:
        yield from map(render, range(num))
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(render, range(num), chunksize=32)
