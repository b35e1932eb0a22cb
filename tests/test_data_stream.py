"""DataStream: one checkpointable stream per rank; its resume, its warnings and its health over ranks."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from gandist.data.config import DataConfig
from gandist.data.health import UnreadableDataError
from gandist.data.loader import BatchStream, DataStream
from gandist.data.stream import epoch_shares
from tests.conftest import GLYPHS_PER_SHARD, run

SCRIPT = Path(__file__).parent / "scripts" / "data_stream_two_ranks.py"


def data_stream(
    shards: Path, rank: int = 0, world_size: int = 1, batch_size: int = 8, **data: object
) -> DataStream:
    cfg = DataConfig(**({"shards": str(shards), "num_workers": 2, "shuffle_buffer": 16} | data))
    return DataStream(cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=7)


def keys(batches: list[dict]) -> list[tuple[str, str]]:
    return [(Path(u).name, k) for b in batches for u, k in zip(b["url"], b["key"], strict=True)]


def saved_and_loaded(state: dict, path: Path) -> dict:
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def test_state_dict_round_trips_through_torch_load_with_weights_only(
    glyph_shards: Path, tmp_path: Path
) -> None:
    stream = data_stream(glyph_shards)
    for _ in range(5):
        stream.next_batch()
    state = stream.state_dict()
    assert state["position"][0] == 5 and (state["world_size"], state["num_workers"]) == (1, 2)
    loaded = saved_and_loaded(state, tmp_path / "data.pt")
    assert loaded == state
    fresh = data_stream(glyph_shards)
    fresh.load_state_dict(loaded)
    assert fresh.state_dict() == state


def test_a_resumed_stream_yields_the_batches_of_an_uninterrupted_one_bit_for_bit(
    glyph_shards: Path, tmp_path: Path
) -> None:
    # 2 workers, 8 shards of 32: each role's epoch is 4 shards = 16 batches of 8, so 40 batches
    # cross an epoch boundary of both roles; the cuts fall on either role's turn.
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    straight = data_stream(glyph_shards)
    full = [straight.next_batch() for _ in range(40)]
    # Starting the loader's workers draws no number from the global RNG (the latents of a
    # resumed run depend on that).
    assert torch.equal(torch.rand(3), expected_draw)
    assert len({b["epoch"] for b in full}) == 2
    for cut in (17, 34):
        first = data_stream(glyph_shards)
        for _ in range(cut):
            first.next_batch()
        resumed = data_stream(glyph_shards)
        resumed.load_state_dict(saved_and_loaded(first.state_dict(), tmp_path / f"{cut}.pt"))
        rest = [resumed.next_batch() for _ in range(40 - cut)]
        assert keys(rest) == keys(full[cut:]), f"resumed after {cut} batches"
        for a, b in zip(rest, full[cut:], strict=True):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_a_changed_rank_or_worker_count_warns_once_naming_it_and_reads_a_fresh_order(
    glyph_shards: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved = data_stream(glyph_shards)
    for _ in range(3):
        saved.next_batch()
    saved.counts.num_skipped, saved.counts.num_read = 2, 30
    state = saved.state_dict()
    caplog.set_level(logging.WARNING, logger="gandist.data.loader")
    streams = [data_stream(glyph_shards, rank=rank, world_size=2) for rank in (0, 1)]
    # The checkpoint holds rank 0's file only: a new rank loads its data state from it.
    for stream in streams:
        stream.load_state_dict(state)
    [record] = caplog.records
    assert record.getMessage().startswith(
        "the data stream was saved with 1 rank x 2 workers, now 2 ranks x 2 workers: it "
        "restarts in a fresh order"
    )
    # Bad-data counts continue on the rank that saved them; the new rank starts from zero.
    assert [(s.counts.num_skipped, s.counts.num_read) for s in streams] == [(2, 30), (0, 0)]
    # A fresh order, the same on both ranks, and no replay of the run's first batches.
    seeds = {s.seed for s in streams}
    assert len(seeds) == 1 and seeds != {7}
    replay = keys([data_stream(glyph_shards, world_size=2).next_batch() for _ in range(2)])
    assert keys([streams[0].next_batch() for _ in range(2)]) != replay
    assert streams[0].state_dict()["position"][0] == 2
    # The fresh order's seed travels with the state: a later resume continues that order.
    again = data_stream(glyph_shards, rank=0, world_size=2)
    again.load_state_dict(streams[0].state_dict())
    assert keys([again.next_batch() for _ in range(3)]) == keys(
        [streams[0].next_batch() for _ in range(3)]
    )

    caplog.clear()
    fewer = data_stream(glyph_shards, num_workers=1)
    fewer.load_state_dict(dict(state))
    [record] = caplog.records
    assert "saved with 1 rank x 2 workers, now 1 rank x 1 worker: " in record.getMessage()
    caplog.clear()
    same = data_stream(glyph_shards)
    same.load_state_dict(dict(state))
    assert not caplog.records and same.state_dict() == state


def test_a_batch_stream_hands_on_its_batches_with_no_state_or_health() -> None:
    batches = [{"image": torch.full((2, 3, 4, 4), float(i))} for i in range(3)]
    stream = BatchStream(batches)
    stream.load_state_dict({})
    assert [stream.next_batch()["image"][0, 0, 0, 0].item() for _ in range(3)] == [0, 1, 2]
    assert stream.state_dict() == {} and stream.health() == {}


# ---- exact mode with fewer shards than readers ------------------------------------------------


def test_exact_mode_splits_one_shard_over_two_ranks_two_workers_once_per_epoch_and_resumes(
    glyph_shards: Path, tmp_path: Path
) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted(glyph_shards.glob("*.tar"))[0], one)
    # 4 readers x 8 of the 32 samples: 2 batches of 4 per role, 4 per rank per epoch.
    seen = []
    for rank in (0, 1):
        stream = data_stream(one, rank=rank, world_size=2, batch_size=4)
        batches = [stream.next_batch() for _ in range(10)]
        epoch0 = [b for b in batches if b["epoch"] == 0]
        assert len(epoch0) == 4 and {b["epoch"] for b in batches} == {0, 1, 2}
        seen += keys(epoch0)
        for cut in (3, 5):
            first = data_stream(one, rank=rank, world_size=2, batch_size=4)
            for _ in range(cut):
                first.next_batch()
            resumed = data_stream(one, rank=rank, world_size=2, batch_size=4)
            resumed.load_state_dict(first.state_dict())
            rest = [resumed.next_batch() for _ in range(10 - cut)]
            assert keys(rest) == keys(batches[cut:]), f"rank {rank} resumed after {cut}"
    assert len(seen) == len(set(seen)) == GLYPHS_PER_SHARD  # every sample once across 4 readers


@pytest.mark.parametrize("num_shards", [1, 3, 4, 6])
def test_epoch_shares_give_every_sample_to_exactly_one_of_four_readers(num_shards: int) -> None:
    urls = [f"s{i}.tar" for i in range(num_shards)]
    for epoch in range(3):
        takers: dict[tuple[str, int], list[int]] = {}
        for slot in range(4):
            for share in epoch_shares(urls, seed=1, epoch=epoch, slot=slot, slots=4):
                for index in range(12):  # the first 12 samples of each shard
                    if index % share.parts == share.part:
                        takers.setdefault((share.url, index), []).append(slot)
        assert sorted(takers) == [(url, i) for url in sorted(urls) for i in range(12)]
        assert all(len(slots) == 1 for slots in takers.values()), takers


def test_a_shard_too_small_to_share_among_its_readers_fails_with_a_clear_message(
    tmp_path: Path,
) -> None:
    with wds.TarWriter(str(tmp_path / "tiny.tar")) as writer:
        for i in range(3):
            writer.write({"__key__": f"{i:03d}", "png": png_bytes(), "cls": 0})
    # 3 samples for 4 readers: reader 3 would read the shard epoch after epoch and get nothing.
    stream = data_stream(tmp_path, rank=3, world_size=4, batch_size=1, num_workers=0)
    with pytest.raises(UnreadableDataError, match="reader 3 of 4 .* gets none of the 3 samples"):
        stream.next_batch()
    reader_2 = data_stream(tmp_path, rank=2, world_size=4, batch_size=1, num_workers=0)
    assert reader_2.next_batch()["key"] == ["002"]


# ---- health over two real gloo ranks ----------------------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.dist
def test_health_sums_bad_data_over_two_gloo_ranks_when_only_one_rank_reads_it(
    glyph_shards: Path, tmp_path: Path
) -> None:
    # Rank 0 reads shards of 4 good + 4 broken samples (alternating), rank 1 clean shards: after
    # 3 batches of 4, rank 0 skipped 12 of 24 read (1/2), rank 1 none of 12; together 12 of 36.
    bad, clean = tmp_path / "bad", tmp_path / "clean"
    bad.mkdir()
    clean.mkdir()
    for shard in range(2):  # one shard per rank x reader each epoch
        with wds.TarWriter(str(bad / f"half-broken-{shard}.tar")) as writer:
            for i in range(4):
                writer.write({"__key__": f"good{i}", "png": png_bytes(), "cls": 0})
                writer.write({"__key__": f"broken{i}", "png": b"\x89PNG\r\n\x1a\nnope", "cls": 1})
    for shard in sorted(glyph_shards.glob("*.tar"))[:2]:
        shutil.copy(shard, clean)
    out = tmp_path / "out"
    out.mkdir()
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SCRIPT), str(bad), str(clean), "0.4,0.25", str(out)],
        timeout=180,
    )  # fmt: skip
    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["local"] for r in results] == [[12, 24], [0, 12]]
    summed = {"data/skipped": 12, "data/bad_fraction": pytest.approx(1 / 3)}
    for result in results:
        # 0.4: rank 0 alone (1/2) is past it, the ranks together (1/3) are not: nobody stops.
        under, over = result["calls"]
        assert "error" not in under and under["values"] == summed
        # 0.25: both ranks stop at the same call, with the same global counts.
        assert "12 of 36 samples read were bad" in over["error"] and over["values"] == summed
    assert len(results[0]["logged"]) == 12 and not results[1]["logged"]
    assert all(
        line.startswith("data/skipped: rank 0 shard ") and "key broken" in line
        for line in results[0]["logged"]
    )
