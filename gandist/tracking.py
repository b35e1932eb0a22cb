"""Experiment tracking: wandb through Accelerate, a metrics.jsonl file, and samples on disk
(image grids, or audio clips as WAV files with a sheet of their spectrograms)."""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import secrets
import socket
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from PIL import Image
from torchvision.utils import make_grid

from gandist.data.audio import log_spectrogram
from gandist.rundir import MAIN_SAMPLES, METRICS_FILE, WANDB_ID_FILE, sample_clip_path, sample_path

log = logging.getLogger(__name__)


class JsonlTracker(GeneralTracker):
    """An Accelerate tracker that appends every scalar log as one JSON line.

    It makes a run readable with no tracking service at all: `{"step": 20, "train/d_loss": ...}`.
    Accelerate calls it on the main process only; the file is opened per write so nothing is
    held open across a crash.
    """

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self) -> Path:
        return self.path

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        scalars = {k: _scalar(v) for k, v in values.items() if _scalar(v) is not None}
        if not scalars:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")


def _scalar(value: Any) -> float | int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # type: ignore[return-value]
    return None


DEFAULT_WANDB_URL = "https://api.wandb.ai"


def wandb_mode(reach_timeout_s: float = 2.0) -> str:
    """`WANDB_MODE` when set; otherwise online if credentials exist and the server answers.

    With credentials but no route to `WANDB_BASE_URL` (a compute node without internet), wandb
    would retry for 90 s and then kill the run; a TCP connect with a short timeout decides first,
    and the run goes offline with one warning. Offline runs are written under the run directory
    and can be uploaded later with `wandb sync`.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    url = os.environ.get("WANDB_BASE_URL", DEFAULT_WANDB_URL)
    if not _has_wandb_credentials(url):
        return "offline"
    problem = _unreachable(url, reach_timeout_s)
    if problem:
        log.warning(
            "wandb: %s is unreachable (%s); logging offline under the run directory, "
            "upload later with `wandb sync`",
            url,
            problem,
        )
        return "offline"
    return "online"


def _has_wandb_credentials(url: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(netrc.netrc().authenticators(urlsplit(url).hostname or url))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _unreachable(url: str, timeout_s: float) -> str:
    """Why a TCP connection to the server of `url` (or to the proxy that reaches it, as wandb
    would use from HTTP(S)_PROXY) fails within `timeout_s`; '' when it opens."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        return "no host name in the URL"
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(parts.hostname):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if not parts.hostname:
            return f"no host name in the proxy {proxy}"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return ""
    except OSError as err:  # refused, timed out, no DNS
        return str(err) or type(err).__name__


def wandb_run_id(run_dir: Path) -> str:
    """The run directory's wandb id, created once: a resumed job continues the same wandb run."""
    path = run_dir / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    path.write_text(run_id + "\n")
    return run_id


def image_grid(images: torch.Tensor, path: str | os.PathLike | None = None) -> torch.Tensor:
    """Arrange images [B, C, H, W] in [-1, 1] into one grid [C, H', W'] in [0, 1]; save it if asked.

    make_grid repeats a single channel three times, so the grid is always RGB.
    """
    nrow = max(1, int(math.sqrt(images.shape[0])))
    grid = make_grid(
        images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2
    )
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid_to_uint8(grid)).save(path)
    return grid


def grid_to_uint8(grid: torch.Tensor) -> np.ndarray:
    """A grid [C, H, W] in [0, 1] as pixels [H, W, C] uint8, rounded as torchvision's save_image.

    Trackers must get these bytes, not the float grid: wandb.Image casts a float array straight
    to uint8, which turns [0, 1] into an all-black image.
    """
    pixels = grid.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255)
    return pixels.permute(1, 2, 0).to(torch.uint8).numpy()


def spectrogram_grid(
    clips: torch.Tensor, path: str | os.PathLike | None = None, nrow: int | None = None
) -> torch.Tensor:
    """Log spectrograms of clips [B, 1, L] side by side, sqrt(B) (or `nrow`) to a row, as a
    grid [3, H', W'] in [0, 1] (low frequencies at the bottom, white gaps); save it if asked.

    Levels are dB below full scale, so a quiet clip looks quiet next to a loud one; the hop
    gives 257 frames at any length, so each tile is square (257 frequency bins).
    """
    hop = max(1, clips.shape[-1] // 256)
    spectrograms = [
        torch.from_numpy(
            log_spectrogram(clip[0].float().cpu().numpy(), hop=hop, full_scale=True).copy()
        )
        for clip in clips
    ]
    nrow = nrow or max(1, int(math.sqrt(len(spectrograms))))
    grid = make_grid(torch.stack(spectrograms)[:, None], nrow=nrow, padding=2, pad_value=1.0)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid_to_uint8(grid)).save(path)
    return grid


def write_clips(
    clips: torch.Tensor, paths: list[Path], sample_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write clips [B, 1, L] in [-1, 1] as mono WAV files (16-bit PCM: every player reads it)."""
    import soundfile

    assert clips.dim() == 3 and clips.shape[1] == 1 and len(paths) == len(clips), clips.shape
    waves = clips[:, 0].detach().float().clamp(-1, 1).cpu().numpy()
    for path, wave in zip(paths, waves, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, wave, sample_rate, subtype=subtype)


def log_image(trackers: Any, key: str, grid: torch.Tensor, step: int) -> None:
    """Log a grid [C, H, W] in [0, 1] to wandb as exactly the pixels of the PNG in samples/.

    `trackers` is an Accelerator (its wandb tracker is used) or a tracker with `log_images`.
    Call it on the main process only.
    """
    tracker = trackers.get_tracker("wandb") if hasattr(trackers, "get_tracker") else trackers
    tracker.log_images({key: [grid_to_uint8(grid)]}, step=step)


IMAGES_AXIS = "train/images_seen"
HOURS_AXIS = "train/hours"
AXIS_PREFIXES = ("train/", "eval/", "perf/", "data/")
MIN_SUMMARIES = ("eval/fid", "eval/kid")


def define_axes(run: Any) -> None:
    """Make images seen the x-axis of every train/, eval/, perf/ and data/ chart (wall-clock
    hours the other one offered), so runs with other batch sizes or GPU counts line up.

    `step_sync` fills the axis into rows that lack it (an evaluation logs no images_seen).
    """
    run.define_metric(IMAGES_AXIS)
    run.define_metric(HOURS_AXIS)
    for prefix in AXIS_PREFIXES:
        run.define_metric(f"{prefix}*", step_metric=IMAGES_AXIS, step_sync=True)


def define_summaries(run: Any, keys: list[str]) -> None:
    """The run's summary of each new key: the best (lowest) FID and KID, the last loss."""
    for key in keys:
        if key in MIN_SUMMARIES:
            run.define_metric(key, summary="min")
        elif key.endswith("_loss"):
            run.define_metric(key, summary="last")


class Tracker:
    """Where a run reports: metrics.jsonl always, wandb when enabled, sample grids on disk.

    Built on Accelerate's trackers (`log_with`), which act on the main process only.
    """

    def __init__(
        self, accelerator: Accelerator, run_dir: Path, use_wandb: bool, sample_rate: int = 16000
    ) -> None:
        self.accelerator, self.mode = accelerator, "disabled"
        self.run_dir = Path(run_dir)
        self.use_wandb = use_wandb
        self._defined: set[str] = set()  # keys whose wandb summary is declared
        self.sample_rate = sample_rate
        """Hz of the audio clips a run samples (data.sample_rate)."""

    @staticmethod
    def log_with(run_dir: Path, use_wandb: bool) -> list:
        """The trackers to hand to the Accelerator when it is built."""
        return [JsonlTracker(Path(run_dir) / METRICS_FILE), *(["wandb"] if use_wandb else [])]

    def start(self, project: str, config: dict[str, Any], wandb_kwargs: dict[str, Any]) -> None:
        init_kwargs: dict[str, Any] = {}
        extra = dict(wandb_kwargs)  # `disable_meta`: no command line or host facts recorded
        if self.use_wandb and self.accelerator.is_main_process:
            import wandb

            self.mode = wandb_mode()
            init_kwargs["wandb"] = {
                "dir": str(self.run_dir),
                "mode": self.mode,
                # One wandb run per run directory: a resumed job appends to it.
                "id": wandb_run_id(self.run_dir),
                "resume": "allow",
                # wandb's own 30-line banners only when asked (WANDB_SILENT=false); the run's
                # start-up summary and the line at the end say where to look.
                "settings": wandb.Settings(
                    silent=os.environ.get("WANDB_SILENT", "").lower() != "false",
                    x_disable_meta=bool(extra.pop("disable_meta", False)),
                ),
                **extra,
            }
        self.accelerator.init_trackers(project, config=config, init_kwargs=init_kwargs)
        if self.use_wandb and self.accelerator.is_main_process:
            define_axes(self.accelerator.get_tracker("wandb", unwrap=True))

    def log_scalars(self, values: dict[str, Any], step: int) -> None:
        if self.use_wandb and self.accelerator.is_main_process:
            new = [k for k in values if k not in self._defined]
            if new:
                define_summaries(self.accelerator.get_tracker("wandb", unwrap=True), new)
                self._defined.update(new)
        self.accelerator.log(values, step=step)

    def log_samples(
        self, samples: torch.Tensor | dict[str, torch.Tensor], step: int
    ) -> Path | None:
        """Write a grid of images [B, C, H, W] in [-1, 1] to samples/ and wandb (main process);
        clips [B, 1, L] go as WAV files and a spectrogram sheet (`log_clips`). Returns the PNG.

        Named grids ({"samples": ..., "samples_raw": ...}) are each logged under their name and
        written to their own folder (rundir.sample_path); the main grid's path is returned.
        Audio runs log the main clips only.
        """
        if not self.accelerator.is_main_process:
            return None
        if isinstance(samples, dict):
            for name, grid_samples in samples.items():
                if name != MAIN_SAMPLES and grid_samples.dim() == 4:
                    self._log_named_grid(name, grid_samples, step)
            return self.log_samples(samples[MAIN_SAMPLES], step)
        if samples.dim() == 3:
            return self.log_clips(samples, step)
        path = sample_path(self.run_dir, step)
        grid = image_grid(samples, path)
        if self.use_wandb:
            log_image(self.accelerator, "samples", grid, step)
        return path

    def _log_named_grid(self, name: str, samples: torch.Tensor, step: int) -> None:
        grid = image_grid(samples, sample_path(self.run_dir, step, name=name))
        if self.use_wandb:
            log_image(self.accelerator, name, grid, step)

    def log_clips(self, clips: torch.Tensor, step: int) -> Path:
        """Clips [B, 1, L] in [-1, 1]: WAV files and their spectrogram sheet under samples/, and
        in wandb the very same files, as `samples/audio` (players) and `samples/spectrograms`."""
        paths = [sample_clip_path(self.run_dir, step, i) for i in range(len(clips))]
        write_clips(clips, paths, self.sample_rate)
        sheet = sample_path(self.run_dir, step)
        spectrogram_grid(clips, sheet)
        if self.use_wandb:
            import wandb

            entries = {
                "samples/audio": [
                    wandb.Audio(str(p), sample_rate=self.sample_rate, caption=p.stem) for p in paths
                ],
                "samples/spectrograms": wandb.Image(str(sheet)),
            }
            self.accelerator.get_tracker("wandb").log(entries, step=step)
        return sheet

    def finish(self) -> None:
        where = None
        if self.use_wandb and self.accelerator.is_main_process:
            run = getattr(self.accelerator.get_tracker("wandb"), "run", None)
            where = Path(run.dir).parent if run is not None and run.dir else None
        self.accelerator.end_training()
        if where is not None and self.mode == "offline":
            log.info("wandb run saved offline in %s; upload it with `wandb sync %s`", where, where)
        elif where is not None:
            log.info("wandb run: %s", where)
