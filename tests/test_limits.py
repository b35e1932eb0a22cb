"""Decoder bounds on crafted files: pixel bombs are refused before decoding, audio is decoded
only as far as the clip needs, and ordinary samples decode exactly as before."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import soundfile
from PIL import Image

from gandist.data import audio
from gandist.data.limits import DecodeLimitError, open_image, read_clip


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header that declares `width` x `height` grey pixels, with one row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(bytes(1 + width))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def encoded_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def peak_bytes(work: Callable[[], object]) -> int:
    """Peak Python-visible allocation (numpy arrays included) while `work` runs."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    bomb = png_claiming(100_000, 100_000)  # 10 Gpx declared in about 100 KB
    with pytest.raises(DecodeLimitError, match="image too large"):
        open_image(bomb)
    # A real image: 3000x3000 grey zeros, about 9 KB as PNG, 9 MB decoded.
    data = encoded_png(Image.new("L", (3000, 3000)))
    assert len(data) < 20_000
    with pytest.raises(
        DecodeLimitError, match="3000x3000 = 9000000 pixels, over the limit of 1000000"
    ):
        open_image(data, max_pixels=1_000_000)
    assert (
        peak_bytes(lambda: pytest.raises(DecodeLimitError, open_image, data, 1_000_000)) < 1 << 20
    )
    assert open_image(data).size == (3000, 3000)  # the default limit lets it through


def test_ordinary_images_decode_as_pillow_decodes_them() -> None:
    rng = np.random.default_rng(0)
    for mode, shape in (("RGB", (32, 48, 3)), ("L", (17, 5)), ("RGBA", (8, 8, 4))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        data = encoded_png(image)
        assert np.array_equal(
            np.asarray(open_image(data)), np.asarray(Image.open(io.BytesIO(data)))
        )
    with pytest.raises(ValueError, match="max_pixels must be >= 1, got 0"):
        open_image(encoded_png(image), max_pixels=0)


def flac(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def test_a_long_clip_is_decoded_only_as_far_as_the_clip_needs() -> None:
    silence = np.zeros(9_600_000, np.float32)
    silence[4_800_000 - 8192 : 4_800_000 + 8192] = np.linspace(-0.5, 0.5, 16384)  # the centre
    data = flac(silence)
    assert len(data) < 100_000  # 9.6 million samples in a few tens of KB
    clip = read_clip(data, 16000, 16384)
    assert clip.shape == (1, 16384) and clip.dtype == np.float32
    assert np.array_equal(clip, audio.clip_array(data, 16000, 16384))
    ours = peak_bytes(lambda: read_clip(data, 16000, 16384))
    full = peak_bytes(lambda: audio.clip_array(data, 16000, 16384))
    assert ours < 1 << 20 and full > 30 << 20, (ours, full)


def test_clips_decode_exactly_as_clip_array_does() -> None:
    rng = np.random.default_rng(1)
    cases = [
        (rng.uniform(-1, 1, 1000).astype(np.float32), 4096),  # short: padded
        (rng.uniform(-1, 1, 5001).astype(np.float32), 4096),  # odd centre
        (rng.uniform(-1, 1, (7000, 2)).astype(np.float32), 4096),  # stereo
        (rng.uniform(-1, 1, 4096).astype(np.float32), 4096),
    ]
    for samples, length in cases:
        data = flac(samples)
        for keep_pcm16 in (False, True):
            ours = read_clip(data, 16000, length, keep_pcm16)
            theirs = audio.clip_array(data, 16000, length, keep_pcm16)
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_wrong_rate_and_too_many_channels_are_refused_from_the_header() -> None:
    data = flac(np.zeros(9_600_000, np.float32), rate=22050)
    with pytest.raises(ValueError, match="sample rate 22050 Hz, expected data.sample_rate=16000"):
        read_clip(data, 16000, 16384)
    assert peak_bytes(lambda: pytest.raises(ValueError, read_clip, data, 16000, 16384)) < 1 << 20
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((10, 300), np.float32), 16000, format="WAV")
    with pytest.raises(DecodeLimitError, match="300 channels, over the limit of 16"):
        read_clip(buffer.getvalue(), 16000, 16384)
    with pytest.raises(ValueError, match="cannot decode audio"):
        read_clip(b"not audio" * 10, 16000, 16384)


def test_the_training_stream_applies_the_configured_pixel_and_member_caps(tmp_path) -> None:
    """data.max_image_pixels and data.max_member_bytes reach the stream: an image over the
    pixel cap is one bad sample, a member over the byte cap ends its shard as bad data."""
    import webdataset as wds

    from gandist.data.config import DataConfig
    from gandist.data.loader import DataStream

    small = encoded_png(Image.new("RGB", (8, 8), "green"))
    with wds.TarWriter(str(tmp_path / "a.tar")) as writer:
        for i in range(8):
            writer.write({"__key__": f"ok{i}", "png": small, "cls": 0})
        writer.write({"__key__": "bomb", "png": png_claiming(4096, 4096), "cls": 0})
        writer.write({"__key__": "huge", "png": small + bytes(64 << 10), "cls": 0})
        for i in range(8, 12):
            writer.write({"__key__": f"late{i}", "png": small, "cls": 0})
    cfg = DataConfig(
        shards=str(tmp_path / "a.tar"), resolution=8, num_workers=0, shuffle_buffer=0,
        max_image_pixels=64 * 64, max_member_bytes=32 << 10, max_bad_fraction=1.0,
    )  # fmt: skip
    stream = DataStream(cfg, batch_size=4, rank=0, world_size=1, seed=0)
    keys = [k for _ in range(3) for k in stream.next_batch()["key"]]
    assert keys[:8] == [f"ok{i}" for i in range(8)]
    assert not any(k.startswith("late") for k in keys)  # the shard ended at the huge member
    skipped = {key: reason for _, key, reason in stream.counts.drain()}
    assert "image too large: 4096x4096" in skipped["bomb"], skipped
    assert "MemberTooLargeError" in skipped[""], skipped  # the shard, from the huge member on


def test_evaluation_reads_real_data_with_the_runs_data_caps(tmp_path) -> None:
    """Evaluation (during training and `gandist eval`) reads its real samples through
    `SampleFormat.of(cfg.data)`: a cap set in `data.*` changes what it accepts, and the
    reference statistics are keyed by it."""
    import webdataset as wds

    from gandist.data.config import DataConfig
    from gandist.metrics.sharded import Ranks, SampleFormat, real_samples

    small = encoded_png(Image.new("RGB", (8, 8), "green"))
    large = encoded_png(Image.new("RGB", (48, 48), "red"))
    with wds.TarWriter(str(tmp_path / "a.tar")) as writer:
        writer.write({"__key__": "ok0", "png": small, "cls": 0})
        writer.write({"__key__": "large", "png": large, "cls": 0})
        writer.write({"__key__": "ok1", "png": small, "cls": 0})
        writer.write({"__key__": "padded", "png": small + bytes(40 << 10), "cls": 0})
        writer.write({"__key__": "late", "png": small, "cls": 0})

    def accepted(**caps: int) -> tuple[int, list[str]]:
        cfg = DataConfig(shards=str(tmp_path / "a.tar"), resolution=8, **caps)
        _, samples, handler = real_samples(cfg.shards, SampleFormat.of(cfg), 10, Ranks(0, 1, "cpu"))
        return len(list(samples)), [str(s) for s in handler.drain()]

    assert accepted() == (5, [])  # the defaults take every sample
    count, skipped = accepted(max_image_pixels=32 * 32)
    assert count == 4 and len(skipped) == 1 and "image too large: 48x48" in skipped[0]
    count, skipped = accepted(max_member_bytes=32 << 10)
    assert count == 3 and "MemberTooLargeError" in skipped[0]  # the shard ends at `padded`

    default = SampleFormat.of(DataConfig(resolution=8)).key()
    capped = SampleFormat.of(DataConfig(resolution=8, max_image_pixels=32 * 32)).key()
    assert default == {"kind": "image", "resolution": 8, "channels": 3}  # old caches still hit
    assert capped == default | {"max_image_pixels": 32 * 32}
