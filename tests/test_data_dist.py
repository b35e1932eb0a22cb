"""Two real gloo ranks reading bad data: skips are logged with shard and key, and every rank stops."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from gandist.data.shards import expand_shards
from gandist.data.stream import epoch_shares
from tests.conftest import run, tiny_overrides

pytestmark = pytest.mark.dist


def broken_shard(path: Path, num: int) -> None:
    """A shard whose first sample is fine and whose others have broken PNG bytes."""
    good = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(good, format="PNG")
    with wds.TarWriter(str(path)) as writer:
        writer.write({"__key__": "fine", "png": good.getvalue(), "cls": 0})
        for i in range(num - 1):
            writer.write({"__key__": f"broken{i:03d}", "png": b"\x89PNG\r\n\x1a\nnope", "cls": 1})


@pytest.mark.slow
def test_too_much_bad_data_stops_both_ranks_at_the_same_step_with_a_clear_error(
    tmp_path: Path, glyph_shards: Path
) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for shard in sorted(glyph_shards.glob("*.tar"))[:4]:
        shutil.copy(shard, shards)
    for i in range(4):  # each rank x worker slot gets 1 good + 1 broken-heavy shard per epoch
        broken_shard(shards / f"zz-broken-{i}.tar", 8)
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(
        run_dir,
        shards,
        **{"data.num_workers": 2, "train.steps": 20, "data.max_bad_fraction": 0.05},
    )
    result = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "--tee", "3", "-m", "gandist.train", "configs/dcgan.yaml", *overrides],
        check=False, timeout=180,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for rank in (0, 1):
        lines = [line for line in output.splitlines() if line.startswith(f"[default{rank}]")]
        text = "\n".join(lines)
        assert "BadDataError" in text and "data.max_bad_fraction=0.05" in text, output[-4000:]
        assert f"data/skipped: rank {rank} shard " in text and "key broken" in text
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["data/skipped"] > 0
    assert rows[-1]["data/bad_fraction"] > 0.05 and rows[-1]["step"] < 20
    assert all(row["data/bad_fraction"] <= 0.05 for row in rows[:-1])


def test_a_run_with_a_few_bad_samples_logs_them_and_trains_on(
    tmp_path: Path, glyph_shards: Path
) -> None:
    from gandist.training.config import load_config
    from gandist.training.trainer import Trainer

    shards = tmp_path / "shards"
    shutil.copytree(glyph_shards, shards)
    (shards / "manifest.json").unlink()
    broken_shard(shards / "zz-broken.tar", 3)
    overrides = tiny_overrides(
        tmp_path / "run", shards, **{"train.steps": 33, "train.log_every": 11}
    )
    Trainer(
        load_config(None, [*overrides, "tracking.wandb=false", "data.shuffle_buffer=0"])
    ).train()
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [11, 22, 33]
    # 33 batches of 8 = 264 good samples: all 257 of epoch 0 (2 bad ones skipped on the way),
    # then 7 of epoch 1, which meets the broken shard again only if it comes first.
    urls = expand_shards(str(shards))
    first_in_epoch_1 = epoch_shares(urls, seed=0, epoch=1, slot=0, slots=1)[0].url
    skipped = 4 if first_in_epoch_1.endswith("zz-broken.tar") else 2
    assert rows[-1]["data/skipped"] == skipped
    assert rows[-1]["data/bad_fraction"] == pytest.approx(skipped / (264 + skipped))

    # A resumed run counts on from the checkpoint's totals instead of starting from zero.
    Trainer(
        load_config(
            None,
            [*overrides, "tracking.wandb=false", "data.shuffle_buffer=0", "train.steps=44"]
            + ["resume=latest"],
        )
    ).train()
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [11, 22, 33, 44]
    total = rows[-1]["data/skipped"]
    assert total >= skipped
    assert rows[-1]["data/bad_fraction"] == pytest.approx(total / (44 * 8 + total))
