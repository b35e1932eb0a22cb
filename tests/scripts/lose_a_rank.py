"""One of N gloo ranks that all-reduce in a loop until a peer is lost (a test kills or stops one).

Usage (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set): lose_a_rank.py OUT_DIR TIMEOUT_S
Writes OUT_DIR/ready-RANK once the group is up; exits 3 with one line on stderr when the
collective fails with a lost rank named.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gandist.distributed import RankLostError, build_accelerator, watch_ranks


def main() -> int:
    out, timeout_s = Path(sys.argv[1]), float(sys.argv[2])
    accelerator = build_accelerator("fp32", timeout_s=timeout_s)
    rank = accelerator.process_index
    values = torch.ones(1 << 16)
    try:
        with watch_ranks():
            dist.all_reduce(values)  # the group works before anyone is lost
            (out / f"ready-{rank}").touch()
            while True:
                dist.all_reduce(values)
                values.fill_(1.0)
    except RankLostError as err:
        print(f"gandist: error: {err}", file=sys.stderr, flush=True)
        os._exit(3)  # the process group's threads may still wait on the lost peer


if __name__ == "__main__":
    sys.exit(main())
