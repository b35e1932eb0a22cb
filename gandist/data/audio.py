"""Audio clips as arrays: decode with soundfile, mix to mono, resample, crop or pad, encode FLAC."""

from __future__ import annotations

import io
import math
import re
from fractions import Fraction

import numpy as np
import soundfile
import torch
from scipy.signal import resample_poly

AUDIO_KEYS = ("flac", "wav", "ogg", "mp3")


def decode(data: bytes, keep_pcm16: bool = False) -> tuple[np.ndarray, int]:
    """Encoded audio bytes -> (samples [frames, channels], sample rate in Hz).

    Samples are float32 in [-1, 1]; with `keep_pcm16`, a mono 16-bit PCM clip (what
    `gandist data make` writes) comes back as its int16 values instead, which `pcm16_to_float`
    turns into exactly the floats soundfile would have given, at half the bytes meanwhile.
    Raises ValueError for empty or undecodable input (soundfile's own errors name the format).
    """
    if not data:
        raise ValueError("empty audio file")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as clip:
            pcm16 = keep_pcm16 and clip.subtype == "PCM_16" and clip.channels == 1
            samples = clip.read(dtype="int16" if pcm16 else "float32", always_2d=True)
            rate = clip.samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        detail = re.sub(r"^Error opening <[^>]*>: ", "", str(err))  # the BytesIO repr says nothing
        raise ValueError(f"cannot decode audio: {detail}") from None
    if samples.shape[0] == 0:
        raise ValueError("audio file holds no frames")
    return samples, int(rate)


def pcm16_to_float(samples: np.ndarray) -> np.ndarray:
    """int16 samples (a clip or a batch) -> float32 in [-1, 1), bit for bit soundfile's own
    float read of them: x / 32768. Multiplying by 2**-15 is that exactly, in one pass."""
    return np.multiply(samples, np.float32(2**-15), dtype=np.float32)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [frames], the channel mean."""
    if samples.ndim == 1:
        return samples
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)


def resample(samples: np.ndarray, rate_hz: int, target_hz: int) -> np.ndarray:
    """Polyphase resampling of a mono clip (scipy's anti-aliased resample_poly)."""
    if rate_hz == target_hz:
        return samples
    ratio = Fraction(target_hz, rate_hz)
    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)


def crop_or_pad(samples: np.ndarray, length: int) -> np.ndarray:
    """The centre `length` samples of a longer clip, or a shorter clip zero-padded at the end."""
    if len(samples) >= length:
        start = (len(samples) - length) // 2
        return samples[start : start + length]
    return np.pad(samples, (0, length - len(samples)))


def windows(samples: np.ndarray, length: int, hop: int | None = None) -> list[np.ndarray]:
    """Cut a clip into windows of `length` (hop defaults to `length`); the last is zero-padded.

    A clip shorter than one window gives one padded window.
    """
    hop = hop or length
    count = max(1, math.ceil((len(samples) - length) / hop) + 1) if len(samples) > length else 1
    return [crop_or_pad(samples[i * hop : i * hop + length], length) for i in range(count)]


def encode_flac(samples: np.ndarray, rate_hz: int) -> bytes:
    """Mono float samples -> 16-bit FLAC bytes (lossless for 16-bit sources)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), rate_hz, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def clip_array(data: bytes, sample_rate: int, length: int, keep_pcm16: bool = False) -> np.ndarray:
    """Shard bytes -> array [1, length]: float32 in [-1, 1], or int16 (see `decode`).

    Raises ValueError when the clip's rate is not `sample_rate` (shards are made at one rate;
    resampling belongs in `gandist data make`, not in every training step).
    """
    samples, rate = decode(data, keep_pcm16)
    if rate != sample_rate:
        raise ValueError(f"sample rate {rate} Hz, expected data.sample_rate={sample_rate}")
    return np.ascontiguousarray(crop_or_pad(to_mono(samples), length))[None]


def load_clip(data: bytes, sample_rate: int, length: int) -> torch.Tensor:
    """Shard bytes -> float tensor [1, length] in [-1, 1] (see `clip_array`)."""
    return torch.from_numpy(clip_array(data, sample_rate, length).astype(np.float32, copy=False))


def log_spectrogram(
    clip: np.ndarray, n_fft: int = 512, hop: int = 128, full_scale: bool = False
) -> np.ndarray:
    """Log-magnitude STFT of a mono clip, [freq, time], scaled to [0, 1] (for contact sheets).

    80 dB of range below the clip's loudest bin; with `full_scale`, below a full-scale sine
    instead, so quiet clips look quiet and loudness compares across the clips of a sheet.
    """

    spec = torch.stft(
        torch.as_tensor(clip, dtype=torch.float32),
        n_fft=n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft),
        return_complex=True,
    ).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-5))  # dB, floor at -100
    # A periodic Hann window sums to n_fft / 2, so a sine of amplitude 1 peaks at n_fft / 4.
    top = 20 * math.log10(n_fft / 4) if full_scale else db.max()
    db = (db - top).clamp(-80.0, 0.0)
    return ((db + 80.0) / 80.0).flip(0).numpy()  # low frequencies at the bottom
