"""Built-in glyph shards and the per-rank stream: disjoint shards, endless equal batches, exact resume."""

from __future__ import annotations

import copy
import hashlib
import json
from itertools import islice
from pathlib import Path

import pytest

from gandist import cli
from gandist.data.config import DataConfig
from gandist.data.loader import build_loader
from gandist.data.stream import StreamPosition
from tests.conftest import GLYPHS_PER_SHARD, NUM_GLYPH_SHARDS


def test_synth_glyphs_writes_deterministic_shards_and_a_manifest(tmp_path: Path) -> None:
    digests = []
    for out in (tmp_path / "a", tmp_path / "b"):
        args = ["data", "synth", "glyphs", "--out", str(out), "--num", "50", "--shard-size", "20"]
        assert cli.main([*args, "--quiet", "--workers", "1"]) == 0
        shards = sorted(out.glob("*.tar"))
        assert [s.name for s in shards] == [f"glyphs-00000{i}.tar" for i in range(3)]
        digests.append([hashlib.sha256(s.read_bytes()).hexdigest() for s in shards])
    assert digests[0] == digests[1]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert (manifest["count"], manifest["resolution"], len(manifest["classes"])) == (50, 32, 10)


def loader(shards: Path, rank: int, world_size: int, workers: int = 2, **kwargs):
    cfg = DataConfig(shards=str(shards), num_workers=workers, shuffle_buffer=16)
    return build_loader(cfg, batch_size=8, rank=rank, world_size=world_size, seed=3, **kwargs)


def test_stream_yields_scaled_labelled_image_batches(glyph_shards: Path) -> None:
    batch = next(iter(loader(glyph_shards, 0, 1, workers=0)))
    images = batch["image"]
    assert images.shape == (8, 3, 32, 32)
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < -0.5 < 0.5 < images.max()
    assert set(batch["label"].tolist()) <= set(range(10))


def test_two_ranks_two_workers_read_disjoint_shards_and_never_run_dry(glyph_shards: Path) -> None:
    # One epoch: each of the 4 (rank, worker) slots reads 8 / 4 = 2 shards = 64 samples = 8 batches.
    per_epoch = NUM_GLYPH_SHARDS * GLYPHS_PER_SHARD // 2 // 8
    seen = {}
    for rank in (0, 1):
        batches = list(islice(iter(loader(glyph_shards, rank, 2)), 3 * per_epoch))
        assert len(batches) == 3 * per_epoch  # the stream outlasts the epoch: equal counts
        epoch0 = [b for b in batches if b["epoch"] == 0]
        assert len(epoch0) == per_epoch
        seen[rank] = {url for b in epoch0 for url in b["url"]}
        keys = [k for b in epoch0 for k in b["key"]]
        assert len(keys) == len(set(keys))  # no sample twice within the epoch
    assert len(seen[0]) == len(seen[1]) == NUM_GLYPH_SHARDS // 2
    assert not seen[0] & seen[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_continues_with_the_next_batch_across_epochs(
    glyph_shards: Path, workers: int
) -> None:
    position = StreamPosition.start(max(1, workers))
    stream = iter(loader(glyph_shards, 1, 2, workers=workers, position=position))
    keys, saved = [], None
    for index in range(19):  # 16 batches per epoch at one worker, 8 per role at two
        batch = next(stream)
        position.advance(batch)
        keys.append(batch["key"])
        if index == 10:
            saved = copy.deepcopy(position)
    resumed = iter(loader(glyph_shards, 1, 2, workers=workers, position=saved))
    assert [next(resumed)["key"] for _ in range(8)] == keys[11:]
