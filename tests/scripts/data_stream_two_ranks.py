"""Run under torchrun with 2 gloo ranks: DataStream.health sums bad-data counts over the ranks.

Usage: data_stream_two_ranks.py RANK0_SHARDS RANK1_SHARDS MAX_BAD_FRACTION,... OUT_DIR

Each rank streams its own folder (rank 0 may hold bad data, rank 1 none), draws 3 batches of 4,
then calls `health()` once per limit (one launch for several verdicts: a process group costs
more to start than the rest); it writes what each call returned or raised to OUT_DIR/rank{R}.json.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gandist.data.config import DataConfig
from gandist.data.health import BadDataError
from gandist.data.loader import DataStream


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(tensor)
    return tensor


def main() -> None:
    shards = sys.argv[1:3]
    limits, out_dir = [float(v) for v in sys.argv[3].split(",")], Path(sys.argv[4])
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("gandist.data.loader").addHandler(handler)
    cfg = DataConfig(shards=shards[rank], num_workers=0, shuffle_buffer=0)
    stream = DataStream(
        cfg, batch_size=4, rank=rank, world_size=world_size, seed=0, reduce_sum=all_reduce_sum
    )
    for _ in range(3):
        stream.next_batch()
    result: dict = {"local": [stream.counts.num_skipped, stream.counts.num_read], "calls": []}
    for limit in limits:
        cfg.max_bad_fraction = limit
        try:
            result["calls"].append({"values": stream.health()})
        except BadDataError as err:
            result["calls"].append({"error": str(err), "values": err.values})
    result["logged"] = [line for line in records if line.startswith("data/skipped")]
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
