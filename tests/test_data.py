"""Data at scale: making, verifying and streaming image and audio shards, bad data, and resume."""

from __future__ import annotations

import functools
import http.server
import io
import itertools
import json
import shutil
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import webdataset as wds
from PIL import Image
from scipy.signal import resample_poly

from gandist import cli
from gandist.data import audio
from gandist.data.config import DataConfig
from gandist.data.health import BadDataError, DataHealth, UnreadableDataError, check_bad_fraction
from gandist.data.loader import build_loader
from gandist.data.make import MakeOptions, make_shards
from gandist.data.shards import expand_shards, write_manifest, write_shards
from gandist.data.stream import StreamPosition
from gandist.data.synthetic import TONE_CLASSES, TONE_LENGTH, tone_sample, tone_samples
from gandist.data.transport import to_torch_batch
from gandist.data.verify import inspect_shards, verify_shards
from tests.conftest import GLYPHS_PER_SHARD, NUM_GLYPH_SHARDS, gandist_cli

TONES_PER_SHARD = 16


@pytest.fixture(scope="module")
def tone_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 shards x 16 tones (16 kHz, 16384 samples)."""
    out = tmp_path_factory.mktemp("tones")
    shards = write_shards(tone_samples(64, seed=3), out, "tones", max_count=TONES_PER_SHARD)
    write_manifest(out, shards, kind="audio", sample_rate=16000, length=TONE_LENGTH)
    return out


def loader(
    shards: Path | str,
    batch_size: int = 8,
    rank: int = 0,
    world_size: int = 1,
    position: StreamPosition | None = None,
    **data: object,
) -> torch.utils.data.DataLoader:
    cfg = DataConfig(**({"shards": str(shards), "num_workers": 0, "shuffle_buffer": 16} | data))
    return build_loader(
        cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=5, position=position
    )


def take(shards: Path | str, num_batches: int, **kwargs) -> list[dict]:
    batches = iter(loader(shards, **kwargs))
    return [next(batches) for _ in range(num_batches)]


def ids(batches: list[dict]) -> list[tuple[str, str]]:
    return [(Path(u).name, k) for b in batches for u, k in zip(b["url"], b["key"], strict=True)]


# ---- make: folders of images and audio -> shards ---------------------------------------------


def test_make_images_keeps_pixels_labels_and_skips_corrupt_empty_and_fake_files(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    exact = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for name, shape in [
        ("cat/a.png", (16, 16, 3)),
        ("cat/b.png", (24, 40, 3)),
        ("dog/c.jpg", (30, 20)),
    ]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = exact if name == "cat/a.png" else rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(src / name)
    (src / "dog/corrupt.png").write_bytes((src / "cat/a.png").read_bytes()[:60])
    (src / "dog/empty.jpg").write_bytes(b"")
    (src / "dog/notes.png").write_text("not an image at all")
    (src / "dog/readme.txt").write_text("ignored: not an image extension")

    report = make_shards(
        src, tmp_path / "out", MakeOptions(kind="image", size=16), max_count=2, progress=False
    )

    assert report.classes == ["cat", "dog"] and report.num_samples == 3 and report.num_files == 6
    reasons = dict(report.skipped)
    assert set(reasons) == {"dog/corrupt.png", "dog/empty.jpg", "dog/notes.png"}
    assert reasons["dog/empty.jpg"] == "empty file"
    assert "truncated" in reasons["dog/corrupt.png"]
    assert "not an image" in reasons["dog/notes.png"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["count"], manifest["resolution"], manifest["classes"]) == (
        3,
        16,
        ["cat", "dog"],
    )
    assert [s["count"] for s in manifest["shards"]] == [2, 1]
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in manifest["shards"])
    assert len(manifest["skipped"]) == 3
    # Two worker processes give the very same shards, byte for byte.
    options = MakeOptions(kind="image", size=16)
    make_shards(src, tmp_path / "out2", options, max_count=2, workers=2, progress=False)
    again = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]

    batch = take(tmp_path / "out", 1, batch_size=3, shuffle_buffer=0, resolution=16)[0]
    assert batch["image"].shape == (3, 3, 16, 16)
    by_key = dict(zip(batch["key"], range(3), strict=True))
    assert sorted(batch["label"].tolist()) == [0, 0, 1]
    first = batch["image"][by_key["00000000"]]  # cat/a.png, already 16 px: stored losslessly
    assert torch.equal(
        ((first + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(exact)
    )
    assert verify_shards(str(tmp_path / "out")).problems == []


def test_make_audio_mixes_to_mono_resamples_and_cuts_windows(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "low").mkdir(parents=True)
    (src / "high").mkdir()
    t = np.arange(44100) / 44100  # 1 s at 44.1 kHz
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 880 * t)], 1) * 0.5
    soundfile.write(src / "low" / "a.wav", stereo, 44100, subtype="FLOAT")
    soundfile.write(src / "high" / "b.flac", 0.3 * np.sin(2 * np.pi * 300 * t[:4000]), 8000)
    (src / "high" / "broken.wav").write_bytes(b"RIFF....WAVEnonsense")

    options = MakeOptions(kind="audio", sample_rate=16000, length=4096, windows=True)
    report = make_shards(src, tmp_path / "out", options, progress=False)

    assert report.skipped[0][0] == "high/broken.wav" and len(report.skipped) == 1
    # 44100 samples -> 16000 at 16 kHz -> 4 windows of 4096 (the last padded); 4000 @ 8 kHz -> 8000 -> 2.
    assert report.num_samples == 6 and report.classes == ["high", "low"]
    expected = resample_poly(stereo.mean(axis=1), 160, 441)
    batches = take(tmp_path / "out", 1, batch_size=6, shuffle_buffer=0, kind="audio", length=4096)
    clips = {k: c for k, c in zip(batches[0]["key"], batches[0]["audio"], strict=True)}
    assert batches[0]["audio"].shape == (6, 1, 4096)
    labels = dict(zip(batches[0]["key"], batches[0]["label"].tolist(), strict=True))
    assert sorted(labels.values()) == [0, 0, 1, 1, 1, 1]
    low = [k for k in sorted(clips) if labels[k] == 1]
    joined = torch.cat([clips[k][0] for k in low]).numpy()
    assert np.abs(joined[:16000] - expected).max() < 1e-3  # 16-bit FLAC quantisation
    assert np.all(joined[16000:] == 0)  # padding
    assert verify_shards(str(tmp_path / "out")).problems == []


def test_tones_are_deterministic_labelled_and_stream_as_audio_batches(tone_shards: Path) -> None:
    assert tone_sample(7, seed=3) == tone_sample(7, seed=3)
    assert tone_sample(7, seed=3)["flac"] != tone_sample(7, seed=4)["flac"]
    clip, rate = audio.decode(tone_sample(7, seed=3)["flac"])
    assert (clip.shape, rate) == ((TONE_LENGTH, 1), 16000) and np.abs(clip).max() > 0.2
    batch = take(tone_shards, 1, kind="audio")[0]
    assert batch["audio"].shape == (8, 1, TONE_LENGTH) and batch["audio"].dtype == torch.float32
    assert batch["audio"].abs().max() <= 1.0
    assert all(0 <= label < len(TONE_CLASSES) for label in batch["label"].tolist())


@pytest.mark.parametrize("transport", ["slots", "pipe"])
def test_worker_batches_equal_in_process_batches_bit_for_bit(
    glyph_shards: Path,
    tone_shards: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    # Workers leave batches in reused shared-memory slots, or send them through their pipes
    # when /dev/shm has no room for slots; either way the training process must get what the
    # in-process stream gives, also for batches it still holds after their slot was reused
    # (12 batches, 5 slots).
    from gandist.data import transport as slots_module

    if transport == "pipe":  # no room in /dev/shm for slots
        monkeypatch.setattr(slots_module, "shared_memory_free", lambda: 0)
    seen = []
    to_torch = slots_module.BatchSlots.to_torch

    def spy(self: slots_module.BatchSlots, batch: dict) -> dict:
        seen.append(any(isinstance(v, slots_module.SlotRef) for v in batch.values()))
        return to_torch(self, batch)

    monkeypatch.setattr(slots_module.BatchSlots, "to_torch", spy)
    for shards, kind in ((glyph_shards, "image"), (tone_shards, "audio")):
        here = take(shards, 12, kind=kind, num_workers=0, mode="resampled")
        there = take(shards, 12, kind=kind, num_workers=1, mode="resampled")
        for a, b in zip(here, there, strict=True):
            assert a["key"] == b["key"] and torch.equal(a["label"], b["label"])
            assert a[kind].dtype == b[kind].dtype == torch.float32
            assert torch.equal(a[kind], b[kind])
    assert seen == ([True] * 24 if transport == "slots" else [])
    assert ("--shm-size" in caplog.text) == (transport == "pipe")


def test_a_busy_or_small_slot_sends_the_batch_through_the_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from gandist.data import transport

    monkeypatch.setattr(transport, "get_worker_info", lambda: SimpleNamespace(id=1))
    slots = transport.BatchSlots(num_workers=2, per_worker=2, slot_bytes=4 * 6)
    stack = slots.stacker()
    batch = [np.arange(3, dtype=np.int16) + i for i in range(4)]
    first, second = stack(batch[:2]), stack(batch[2:])
    assert first == transport.SlotRef(1, 0, "<i2", (2, 3)) and second.slot == 1
    assert isinstance(stack(batch[:2]), np.ndarray)  # both slots still unread
    got = slots.to_torch({"audio": first})["audio"]  # reads slot 0 and frees it
    assert torch.equal(got, torch.as_tensor(np.stack(batch[:2])).float() / 32768)
    assert stack(batch[2:]) == transport.SlotRef(1, 0, "<i2", (2, 3))  # the free one, not busy 1
    assert isinstance(stack([np.zeros(7, np.float32)] * 2), np.ndarray)  # does not fit
    held = slots.to_torch({"audio": stack([np.full(3, 0.5, np.float32)] * 2)})["audio"]
    stack([np.full(3, -0.5, np.float32)] * 2)  # float32 is copied out, not kept in the slot
    assert held.dtype == torch.float32 and bool((held == 0.5).all())
    assert slots.busy[0].sum() == 0  # worker 0's slots untouched


def test_16_bit_clips_scale_exactly_as_soundfile_also_among_other_formats(
    tmp_path: Path,
) -> None:
    # 16-bit clips travel as int16 and are scaled per batch: the values must be soundfile's
    # own float read, alone and in a batch that mixes them with clips stored as 24-bit PCM.
    rng = np.random.default_rng(0)
    expected = {}
    for name, subtypes in (("pcm16", ["PCM_16"] * 8), ("mixed", ["PCM_16", "PCM_24"] * 4)):
        samples = []
        for index, subtype in enumerate(subtypes):
            buffer = io.BytesIO()
            clip = rng.uniform(-0.9, 0.9, TONE_LENGTH).astype(np.float32)
            soundfile.write(buffer, clip, 16000, format="FLAC", subtype=subtype)
            samples.append({"__key__": f"{name}{index:04d}", "flac": buffer.getvalue(), "cls": 0})
            expected[samples[-1]["__key__"]] = soundfile.read(
                io.BytesIO(buffer.getvalue()), dtype="float32"
            )[0]
        out = tmp_path / name
        shards = write_shards(samples, out, name, max_count=8)
        write_manifest(out, shards, kind="audio", sample_rate=16000, length=TONE_LENGTH)
        batch = take(out, 1, kind="audio", batch_size=8)[0]
        assert batch["audio"].dtype == torch.float32
        for key, clip in zip(batch["key"], batch["audio"], strict=True):
            assert np.array_equal(clip[0].numpy(), expected[key]), key
    flac16 = io.BytesIO()
    soundfile.write(flac16, np.zeros(100, np.float32), 16000, format="FLAC", subtype="PCM_16")
    assert audio.clip_array(flac16.getvalue(), 16000, 100, keep_pcm16=True).dtype == np.int16
    assert audio.clip_array(flac16.getvalue(), 16000, 100).dtype == np.float32
    every = np.arange(-32768, 32768, dtype=np.int16).reshape(2, 1, -1)  # all 65536 values
    scaled = to_torch_batch({"audio": every.copy()})["audio"]
    assert torch.equal(scaled, torch.from_numpy(audio.pcm16_to_float(every)))
    assert torch.equal(scaled, torch.from_numpy(every.astype(np.float32) / np.float32(32768)))


def test_inspect_counts_classes_and_draws_a_contact_sheet(
    tone_shards: Path, tmp_path: Path
) -> None:
    report = inspect_shards(str(tone_shards), tmp_path / "sheet.png", num=9)
    assert (
        report.num_samples == 64
        and sum(report.labels.values()) == 64
        and report.kinds == {"audio": 64}
    )
    assert Image.open(tmp_path / "sheet.png").size == (3 * 96, 3 * (96 + 12))


# ---- bad data ------------------------------------------------------------------------------


def bad_image_shards(glyph_shards: Path, out: Path) -> Path:
    """Two good glyph shards, one truncated copy, and one shard with broken and member-less samples."""
    out.mkdir()
    good = sorted(glyph_shards.glob("*.tar"))
    for shard in good[:2]:
        shutil.copy(shard, out)
    data = good[2].read_bytes()
    (out / "glyphs-truncated.tar").write_bytes(data[: len(data) // 2 + 100])
    with wds.TarWriter(str(out / "glyphs-broken.tar")) as writer:
        writer.write({"__key__": "broken", "png": b"\x89PNG\r\n\x1a\nnot really", "cls": 1})
        writer.write({"__key__": "nomedia", "cls": 2})
        writer.write({"__key__": "good", "png": Image_bytes(), "cls": 3})
    return out


def Image_bytes() -> bytes:  # noqa: N802
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_samples_and_a_truncated_shard_are_skipped_and_named(
    glyph_shards: Path, tmp_path: Path
) -> None:
    shards = bad_image_shards(glyph_shards, tmp_path / "bad")
    # 2 good shards + half of one + 1 good sample, read once over an exact epoch (one slot).
    health = DataHealth()
    batches = list(itertools.islice(health.track(iter(loader(shards, batch_size=1))), 2 * 32 + 17))
    assert {b["epoch"] for b in batches[:64]} == {0}
    skipped = {(Path(u).name, k): reason for u, k, reason in health.drain()}
    assert "glyphs-truncated.tar" in {shard for shard, _ in skipped}
    assert ("glyphs-broken.tar", "broken") in skipped and "png" in skipped[
        ("glyphs-broken.tar", "broken")
    ]
    assert "no image member" in skipped[("glyphs-broken.tar", "nomedia")]
    assert ("glyphs-truncated.tar", "") in skipped  # the shard as a whole, after its good samples
    assert health.num_skipped == len(skipped) and health.num_read == len(batches) + len(skipped)
    good_in_epoch = [b for b in batches if b["epoch"] == 0]
    assert ("glyphs-broken.tar", "good") in ids(good_in_epoch)
    with pytest.raises(
        BadDataError, match=r"3 of 50 samples read were bad .*max_bad_fraction=0.05"
    ):
        check_bad_fraction(3, 50, 0.05, "x")
    check_bad_fraction(3, 60, 0.05, "x")  # 5% exactly is allowed


def test_audio_at_the_wrong_sample_rate_is_skipped(tone_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    out.mkdir()
    shutil.copy(sorted(tone_shards.glob("*.tar"))[0], out)
    with wds.TarWriter(str(out / "z-other-rate.tar")) as writer:
        writer.write(
            {
                "__key__": "slow",
                "flac": audio.encode_flac(np.zeros(8000, np.float32), 8000),
                "cls": 0,
            }
        )
    health = DataHealth()
    list(itertools.islice(health.track(iter(loader(out, batch_size=1, kind="audio"))), 20))
    [(url, key, reason)] = health.drain()
    assert (Path(url).name, key) == ("z-other-rate.tar", "slow") and "8000 Hz" in reason


def test_a_stream_with_no_readable_shard_fails_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "a.tar").write_bytes(b"this is not a tar file" * 100)
    (tmp_path / "b.tar").write_bytes(b"")
    for spec in (str(tmp_path), f"pipe:cat {tmp_path}/missing-{{0..3}}.tar"):
        with pytest.raises(UnreadableDataError, match="shards in a row without one good sample"):
            next(iter(loader(spec)))


def test_a_shard_cut_at_a_member_boundary_is_reported_as_truncated(
    glyph_shards: Path, tmp_path: Path
) -> None:
    """Python's tarfile reads such a shard as a shorter, valid archive; the stream must not."""
    data = sorted(glyph_shards.glob("*.tar"))[0].read_bytes()
    cut = tmp_path / "cut.tar"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    cut.write_bytes(data[: members[10].offset])  # just before the 11th member's header
    health = DataHealth()
    stream = loader(cut, batch_size=1, shuffle_buffer=0)
    got = list(itertools.islice(health.track(iter(stream)), 5))
    assert [b["key"] for b in got] == [[f"{i:08d}"] for i in range(5)]
    [(url, key, reason)] = health.drain()
    assert (url, key) == (str(cut), "") and "end-of-archive marker" in reason
    assert [str(p) for p in verify_shards(str(cut)).problems] == [
        f"{cut}: unreadable shard: {reason}"
    ]


def test_verify_names_each_bad_shard_and_key_and_exits_1(
    glyph_shards: Path, tmp_path: Path
) -> None:
    assert cli.main(["data", "verify", str(glyph_shards)]) == 0
    shards = bad_image_shards(glyph_shards, tmp_path / "bad")
    result = gandist_cli("data", "verify", str(shards), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    bad = [line for line in result.stdout.splitlines() if line.startswith("BAD ")]
    assert any("glyphs-broken.tar key=broken: png" in line for line in bad)
    assert any("glyphs-broken.tar key=nomedia: no image or audio member" in line for line in bad)
    assert any("glyphs-truncated.tar: unreadable shard: " in line for line in bad)
    assert sum("glyphs-broken.tar" in line for line in bad) == 2
    # A shard changed after it was made no longer matches its manifest.
    copy = tmp_path / "copy"
    shutil.copytree(glyph_shards, copy)
    with wds.TarWriter(str(copy / "glyphs-000000.tar")) as writer:
        writer.write({"__key__": "swapped", "png": Image_bytes(), "cls": 0})
    problems = [str(p) for p in verify_shards(str(copy)).problems]
    assert any("SHA-256 differs" in p for p in problems) and any(
        "manifest says 32" in p for p in problems
    )


# ---- streaming: modes, ranks, workers, URLs --------------------------------------------------


def test_exact_mode_two_ranks_two_workers_read_each_sample_once_per_epoch(
    glyph_shards: Path,
) -> None:
    per_slot = NUM_GLYPH_SHARDS * GLYPHS_PER_SHARD // 4  # 2 ranks x 2 workers
    num_batches = 2 * per_slot // 8  # both roles of a rank, one epoch each
    seen = []
    for rank in (0, 1):
        batches = take(glyph_shards, num_batches, rank=rank, world_size=2, num_workers=2)
        assert {b["epoch"] for b in batches} == {0}
        seen.append(ids(batches))
    assert not set(seen[0]) & set(seen[1])
    assert (
        len(set(seen[0] + seen[1])) == len(seen[0] + seen[1]) == NUM_GLYPH_SHARDS * GLYPHS_PER_SHARD
    )


def test_resampled_mode_gives_every_rank_the_same_batch_count_from_few_shards(
    glyph_shards: Path, tmp_path: Path
) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for shard in sorted(glyph_shards.glob("*.tar"))[:3]:  # 3 shards for 4 slots
        shutil.copy(shard, few)
    counts, streams = [], []
    for rank in (0, 1):
        batches = take(
            few, 12, rank=rank, world_size=2, num_workers=2, mode="resampled", epoch_batches=5
        )
        counts.append(sum(b["epoch"] == 0 for b in batches))
        streams.append(ids(batches))
    assert counts == [6, 6]  # 5 batches per epoch, rounded up to a multiple of 2 workers
    assert streams[0] != streams[1]  # each (rank, worker, epoch) draws its own shards and order
    again = take(few, 12, rank=1, world_size=2, num_workers=2, mode="resampled", epoch_batches=5)
    assert ids(again) == streams[1]  # deterministic from the seed


@pytest.mark.parametrize("mode", ["exact", "resampled"])
def test_a_resumed_stream_continues_exactly_across_an_epoch_boundary(
    glyph_shards: Path, mode: str
) -> None:
    """Per role and epoch: exact mode reads 8 shards / 2 workers = 128 samples = 16 batches,
    resampled mode 12 / 2 = 6 batches. Resuming after 21 or 33 of 40 batches must give the
    very batches an uninterrupted stream gives, through and after an epoch boundary."""
    kwargs = {"num_workers": 2, "mode": mode, "epoch_batches": 12}
    full = take(glyph_shards, 40, **kwargs)
    assert len({b["epoch"] for b in full}) >= 2
    for cut in (21, 33):
        position = StreamPosition.start(2)
        for batch in full[:cut]:
            position.advance(batch)
        saved = StreamPosition.from_list(position.to_list())
        resumed = take(glyph_shards, 40 - cut, position=saved, **kwargs)
        assert ids(resumed) == ids(full[cut:]), f"resumed after {cut} batches"
    if mode == "exact":  # within an epoch no sample comes twice
        for epoch in {b["epoch"] for b in full}:
            read = ids([b for b in full if b["epoch"] == epoch])
            assert len(set(read)) == len(read)


@pytest.fixture
def http_root(glyph_shards: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(glyph_shards))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_pipe_and_http_urls_stream_the_same_samples_as_local_paths(
    glyph_shards: Path, http_root: str
) -> None:
    pattern = "glyphs-{000000..000007}.tar"
    specs = [f"pipe:cat {glyph_shards}/{pattern}", f"{http_root}/{pattern}"]
    assert expand_shards(specs[0])[0] == f"pipe:cat {glyph_shards}/glyphs-000000.tar"
    local = take(glyph_shards, 8)
    for spec in specs:
        remote = take(spec, 8)
        assert [k for b in remote for k in b["key"]] == [k for b in local for k in b["key"]]
        assert torch.equal(remote[0]["image"], local[0]["image"])
    assert verify_shards(specs[0]).num_samples == NUM_GLYPH_SHARDS * GLYPHS_PER_SHARD


def test_data_commands_synth_inspect_make_and_reject_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tones = str(tmp_path / "t")
    args = ["--num", "12", "--shard-size", "8", "--workers", "1", "--quiet"]
    assert cli.main(["data", "synth", "tones", "--out", tones, *args]) == 0
    assert "wrote 12 tones in 2 shards" in capsys.readouterr().out
    assert cli.main(["data", "inspect", tones, "--out", str(tmp_path / "s.png")]) == 0
    printed = capsys.readouterr().out
    assert "2 shards, 12 good samples" in printed and "audio: 12" in printed
    assert (tmp_path / "s.png").is_file()
    missing = ["--from", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--kind", "image"]
    assert cli.main(["data", "make", *missing]) == 2
    assert "is not a folder" in capsys.readouterr().err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
