"""`cyclegan`: unpaired translation between two image domains (Zhu et al., 2017).

Networks: g_ab (A -> B), g_ba (B -> A), d_a (real A vs B -> A), d_b (real B vs A -> B). Each
step is one G phase that trains both translators with one optimizer (least-squares adversarial
loss through the frozen local D's, cycle-consistency L1 weighted by lambda, identity L1 weighted
by identity_weight x lambda), on a fresh batch of each domain, then one D phase that trains
both discriminators on the same real batches against fakes drawn through each D's image pool.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from gandist.data.loader import Batches
from gandist.models.cyclegan import TranslatorPair
from gandist.registry import ALGORITHMS, MODELS
from gandist.training.algorithm import Algorithm, Metrics, OptimizerSpec, Phase
from gandist.training.config import Config
from gandist.training.image_pool import ImagePool

G_AB, G_BA, D_A, D_B = "g_ab", "g_ba", "d_a", "d_b"
GRID_COLUMNS = 6
"""Sample grid columns: A, A->B, A->B->A, B, B->A, B->A->B."""


def least_squares(logits: torch.Tensor, target: float) -> torch.Tensor:
    """LSGAN's loss: the mean squared distance of the logits (any shape) from `target`."""
    logits = logits.float()
    return F.mse_loss(logits, torch.full_like(logits, target))


def translation_grid(columns: list[torch.Tensor], padding: int = 2) -> torch.Tensor:
    """Columns of images [N, C, H, W] in [-1, 1] -> one image [1, C, H', W']: row i shows
    image i of every column, left to right, with black (-1) lines between the cells.

    One image, so the Tracker's square grid keeps the rows as they are."""
    num_rows = columns[0].shape[0]
    cells = torch.stack([c.float().cpu() for c in columns], dim=1).flatten(0, 1)
    grid = make_grid(cells, nrow=len(columns), padding=padding, pad_value=-1.0)
    assert grid.shape[-2] == num_rows * (cells.shape[-2] + padding) + padding
    return grid.unsqueeze(0)


@ALGORITHMS.register("cyclegan")
class CycleGAN(Algorithm):
    """Two translators, two PatchGAN discriminators, two image pools, two data streams."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        build = MODELS.get(cfg.model.name)
        resolution, channels = cfg.data.resolution, cfg.data.channels
        g_ab, d_b = build(cfg.model, resolution, channels)
        g_ba, d_a = build(cfg.model, resolution, channels)
        self.networks = {G_AB: g_ab, G_BA: g_ba, D_A: d_a, D_B: d_b}
        # D_A judges domain A, so it sees the fakes of G_BA; each pool feeds its own D.
        self.pools = {D_A: ImagePool(cfg.cycle.pool_size), D_B: ImagePool(cfg.cycle.pool_size)}
        # The G phase's real and generated images, for the D phase of the same step.
        self._last: dict[str, torch.Tensor] = {}
        self._fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- what the Trainer asks ----------------------------------------------------------

    @property
    def images_per_step(self) -> int:
        # A batch of each domain per step: both count as real samples read.
        return 2 * self.runtime.batch_per_rank * self.runtime.world_size

    def optimizers(self) -> dict[str, OptimizerSpec]:
        optim = self.cfg.optim
        betas = tuple(optim.betas)
        return {
            "g": OptimizerSpec((G_AB, G_BA), optim.g_lr, betas),
            "d": OptimizerSpec((D_A, D_B), optim.d_lr, betas),
        }

    def phases(self, step: int) -> list[Phase]:
        return [
            Phase("g", (G_AB, G_BA), "g", True, step),
            Phase("d", (D_A, D_B), "d", False, step),
        ]

    def loss(self, phase: Phase, batch: dict[str, Any] | None) -> tuple[torch.Tensor, Metrics]:
        if phase.name == "g":
            assert batch is not None
            return self._g_loss(*self._real(batch))
        return self._d_loss()

    def build_stream(self, **kwargs: Any) -> Batches:
        """One UnpairedStream: a batch of each domain per draw, both positions checkpointed;
        on CUDA both domains take the pinned-uint8 path of a single stream."""
        from gandist.data.unpaired import UnpairedStream

        return UnpairedStream(self.cfg.data, device=self.runtime.device, **kwargs)

    def check_batch(self, batch: dict[str, Any]) -> None:
        if set(batch) != {"a", "b"} or not all("image" in batch[k] for k in ("a", "b")):
            raise ValueError(
                "train.algorithm=cyclegan trains on a batch of each domain ({'a': images of "
                "data.shards, 'b': images of data.shards_b}); got a batch with keys "
                f"{sorted(batch)}"
            )

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        """One image: a row per fixed input, A, A->B, A->B->A, B, B->A, B->A->B."""
        real_a, real_b = (x.to(self.runtime.device) for x in self.fixed_inputs())
        pair = self.eval_generator()
        was_training = pair.training
        pair.eval()
        with self.runtime.autocast():
            a_to_b = pair(real_a, "ab")
            a_to_b_to_a = pair(a_to_b, "ba")
            b_to_a = pair(real_b, "ba")
            b_to_a_to_b = pair(b_to_a, "ab")
        pair.train(was_training)
        return translation_grid([real_a, a_to_b, a_to_b_to_a, real_b, b_to_a, b_to_a_to_b])

    def eval_generator(self) -> nn.Module:
        return TranslatorPair(self.local(G_AB), self.local(G_BA))

    def rank_state(self) -> dict[str, Any]:
        return {f"pool/{name}": pool for name, pool in self.pools.items()}

    def fixed_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first train.num_samples images of each domain's sorted shards, [N, C, H, W] in
        [-1, 1]: the same inputs in every grid of the run, and after a resume."""
        if self._fixed is None:
            from gandist.data.unpaired import domain_b_config
            from gandist.metrics.sharded import Ranks, SampleFormat, real_samples

            num, one = self.cfg.train.num_samples, Ranks(0, 1, torch.device("cpu"))
            inputs = []
            for data in (self.cfg.data, domain_b_config(self.cfg.data)):
                _, samples, _ = real_samples(data.shards, SampleFormat.of(data), num, one)
                images = list(itertools.islice(samples, num))
                if not images:
                    raise ValueError(f"no readable image in {data.shards} for the sample grid")
                # uint8 [3, R, R] (grayscale repeated) -> [C, R, R] in [-1, 1]
                batch = torch.stack(images)[:, : data.channels].float() / 127.5 - 1.0
                inputs.append(batch)
            count = min(len(inputs[0]), len(inputs[1]))
            self._fixed = (inputs[0][:count], inputs[1][:count])
        return self._fixed

    # ---- the maths ----------------------------------------------------------------------

    def _real(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_batch(batch)
        device = self.runtime.device
        real_a = batch["a"]["image"].to(device, non_blocking=True)
        real_b = batch["b"]["image"].to(device, non_blocking=True)
        assert real_a.shape[0] == real_b.shape[0] == self.runtime.batch_per_rank
        return real_a, real_b

    def _g_loss(self, real_a: torch.Tensor, real_b: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        cycle = self.cfg.cycle
        g_ab, g_ba = self.networks[G_AB], self.networks[G_BA]
        with self.runtime.autocast():
            fake_b = g_ab(real_a)
            fake_a = g_ba(real_b)
            cycled_a = g_ba(fake_b)
            cycled_b = g_ab(fake_a)
            # The frozen D's through their local modules: DDP would wait for their gradients.
            adv_ab = least_squares(self.local(D_B)(fake_b), 1.0)
            adv_ba = least_squares(self.local(D_A)(fake_a), 1.0)
            cycle_l1 = F.l1_loss(cycled_a.float(), real_a) + F.l1_loss(cycled_b.float(), real_b)
            loss = adv_ab + adv_ba + cycle.cycle_weight * cycle_l1
            metrics: Metrics = {}
            if cycle.identity_weight > 0:
                # G_AB should leave an image that is already B alone (and G_BA an A).
                identity_l1 = F.l1_loss(g_ab(real_b).float(), real_b) + F.l1_loss(
                    g_ba(real_a).float(), real_a
                )
                loss = loss + cycle.identity_weight * cycle.cycle_weight * identity_l1
                metrics["identity_l1"] = identity_l1.detach() / 2
        self._last = {
            "real_a": real_a, "real_b": real_b,
            "fake_a": fake_a.detach(), "fake_b": fake_b.detach(),
        }  # fmt: skip
        metrics |= {
            "g_loss": loss.detach(),
            "g_adv_ab": adv_ab.detach(),
            "g_adv_ba": adv_ba.detach(),
            "cycle_l1": cycle_l1.detach() / 2,
        }
        return loss, metrics

    def _d_loss(self) -> tuple[torch.Tensor, Metrics]:
        assert self._last, "the D phase follows the G phase of the same step"
        last, self._last = self._last, {}
        fake_a = self.pools[D_A].query(last["fake_a"])
        fake_b = self.pools[D_B].query(last["fake_b"])
        d_a, d_b = self.networks[D_A], self.networks[D_B]
        with self.runtime.autocast():
            real_a_logits, fake_a_logits = d_a(last["real_a"]), d_a(fake_a)
            real_b_logits, fake_b_logits = d_b(last["real_b"]), d_b(fake_b)
            # Halved, as in the paper, so D learns slower than G.
            d_a_loss = 0.5 * (least_squares(real_a_logits, 1.0) + least_squares(fake_a_logits, 0.0))
            d_b_loss = 0.5 * (least_squares(real_b_logits, 1.0) + least_squares(fake_b_logits, 0.0))
        loss = d_a_loss + d_b_loss
        return loss, {
            "d_loss": loss.detach(),
            "d_a_loss": d_a_loss.detach(),
            "d_b_loss": d_b_loss.detach(),
            "d_real_a": real_a_logits.detach().float().mean(),
            "d_real_b": real_b_logits.detach().float().mean(),
        }
