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
