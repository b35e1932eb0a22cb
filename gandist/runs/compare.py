"""`gandist compare`: a table and curves of finished runs, from their run directories alone.

Many clusters have no internet, so this is the dashboard there: it reads each run's
config.yaml, run.json and metrics.jsonl (no wandb), prints one row per run (final and best FID,
images seen, hours, images/s, evaluation share, skipped steps and the config keys that differ),
and draws FID and the losses the runs share against images seen, steps or hours. Runs of
different families or kinds (images, audio) compare on the metrics every one of them logged; the
others are named in one line, with the runs that logged them.
"""

from __future__ import annotations

import base64
import glob
import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from gandist.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    read_metrics,
    read_run_info,
    sample_clips,
    sample_grids,
)

AXES = {"images": "train/images_seen", "steps": "step", "hours": "train/hours"}
AXIS_LABELS = {"images": "images seen", "steps": "steps", "hours": "hours"}
# Keys that name or place a run rather than change what it trains.
NOT_SETTINGS = ("run_name", "output_dir", "resume", "tracking.")
# One colour per run (matplotlib's tab10), in the order the runs were given.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


@dataclass
class Run:
    """One run directory, read: its flattened config, launch facts and merged metric rows."""

    path: Path
    config: dict[str, Any]
    info: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The run directory's name (unique within a sweep's folder, unlike run_name)."""
        return self.path.name

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of every finite value of `key`, in step order; a step logged twice
        (a resumed run re-logs the steps after its checkpoint) keeps its latest value."""
        by_step: dict[int, float] = {}
        for row in self.rows:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and "step" in row:
                by_step[int(row["step"])] = float(value)
        return sorted(by_step.items())

    def axis(self, by: str, steps: Sequence[int]) -> np.ndarray:
        """The chosen x-axis at `steps`: steps themselves, or images seen / hours interpolated
        from the training logs (an evaluation row carries neither)."""
        steps_array = np.asarray(steps, dtype=float)
        if by == "steps":
            return steps_array
        known = self.series(AXES[by])
        if not known:
            return np.full(len(steps_array), np.nan)
        xs, ys = zip(*known, strict=True)
        return np.interp(steps_array, [0.0, *xs], [0.0, *ys])

    def last(self, key: str) -> float | None:
        found = self.series(key)
        return found[-1][1] if found else None

    def summary(self) -> dict[str, Any]:
        fids = [v for _, v in self.series("eval/fid")]
        rates = [v for _, v in self.series("perf/images_per_s")]
        steps = [s for row in self.rows if isinstance(s := row.get("step"), int)]
        return {
            "run": self.name,
            "family": self.config.get("model.name", "?"),
            "kind": self.config.get("data.kind", "?"),
            "steps": max(steps, default=0),
            "images seen": self.last("train/images_seen"),
            "hours": self.last("train/hours"),
            "images/s": float(np.median(rates)) if rates else None,
            "eval share": self.last("perf/eval_share"),
            "skipped": self.last("train/skipped_steps"),
            "final FID": fids[-1] if fids else None,
            "best FID": min(fids) if fids else None,
            "world size": self.info.get("world_size"),
            "precision": self.info.get("precision"),
        }


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= (
            flatten(value, f"{prefix}{key}.")
            if isinstance(value, dict)
            else {f"{prefix}{key}": value}
        )
    return flat


def is_run_dir(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def find_runs(patterns: Sequence[str | os.PathLike]) -> list[Path]:
    """Run directories from paths, globs (`runs/sweep-*`) and group folders (a folder whose
    sub-folders are runs, as a sweep writes them), in the order given, each once."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern))) or [str(pattern)]
        for match in map(Path, matches):
            if is_run_dir(match):
                found.append(match)
            elif match.is_dir() and (inner := sorted(p for p in match.iterdir() if is_run_dir(p))):
                found.extend(inner)
            else:
                raise ValueError(
                    f"{pattern} is not a run directory (one with {CONFIG_FILE} and "
                    f"{METRICS_FILE}), a glob matching some, nor a folder of runs"
                )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ValueError("no run directories given")
    return unique


def load_run(path: Path) -> Run:
    config = flatten(OmegaConf.to_container(OmegaConf.load(path / CONFIG_FILE)) or {})
    return Run(path, config, read_run_info(path), read_metrics(path))


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (names and places excluded)."""
    keys = sorted({k for run in runs for k in run.config})
    return [
        key
        for key in keys
        if not key.startswith(NOT_SETTINGS)
        and len({repr(run.config.get(key, "<unset>")) for run in runs}) > 1
    ]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


# Summary columns that are measured (the rest name the run or how it was launched).
MEASURED = ("images seen", "hours", "images/s", "eval share", "skipped", "final FID", "best FID")


def comparison_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the summary columns (family and kind only when they differ; a measured
    column only when every run has it), then the differing config keys."""
    summaries = [run.summary() for run in runs]
    columns = [
        c
        for c in summaries[0]
        if (c not in ("family", "kind") or len({s[c] for s in summaries}) > 1)
        and (c not in MEASURED or all(s[c] is not None for s in summaries))
    ]
    diffs = differing_keys(runs)
    header = columns + diffs
    rows = [
        [_cell(s[c]) for c in columns] + [_cell(run.config.get(k)) for k in diffs]
        for s, run in zip(summaries, runs, strict=True)
    ]
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def shared_curves(runs: Sequence[Run]) -> list[str]:
    """The keys every run logged that are worth a panel: FID first, then the losses."""
    keys = set.intersection(*({k for row in run.rows for k in row} for run in runs))
    losses = sorted(k for k in keys if k.startswith("train/") and k.endswith("_loss"))
    return [k for k in ("eval/fid",) if k in keys] + losses


def logged_keys(run: Run) -> set[str]:
    """The metric keys (`train/...`, `eval/...`, `perf/...`) the run logged a number for."""
    return {
        k
        for row in run.rows
        for k, v in row.items()
        if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def left_out(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Metric keys only some runs logged (runs of other families or kinds, a run that never
    evaluated), each with the names of the runs that did: compared on none of the runs."""
    logged = [logged_keys(run) for run in runs]
    every = set.intersection(*logged)
    return {
        key: [run.name for run, keys in zip(runs, logged, strict=True) if key in keys]
        for key in sorted(set.union(*logged) - every)
    }


def left_out_note(runs: Sequence[Run]) -> str:
    """One line naming the metrics left out of the comparison and who logged them ('' if none)."""
    by_runs: dict[tuple[str, ...], list[str]] = {}
    for key, names in left_out(runs).items():
        by_runs.setdefault(tuple(names), []).append(key)
    if not by_runs:
        return ""
    parts = [f"{', '.join(keys)} (only {', '.join(names)})" for names, keys in by_runs.items()]
    return "left out, not logged by every run: " + "; ".join(parts)


# ---- the picture ----------------------------------------------------------------------------

PANEL_W, PANEL_H, MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 720, 240, 70, 20, 28, 34


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not high > low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-2:
        return f"{value:.1e}"
    return f"{value:.3g}"


def plot_curves(runs: Sequence[Run], by: str, out: str | os.PathLike) -> Path:
    """One PNG: a panel per shared curve (FID, then losses), one colour per run, and a legend."""
    keys = shared_curves(runs)
    if not keys:
        raise ValueError("the runs share no FID or loss curve to plot")
    font = ImageFont.load_default()
    legend_h = 20 * math.ceil(len(runs) / 3) + 8
    image = Image.new("RGB", (PANEL_W, legend_h + PANEL_H * len(keys)), "white")
    draw = ImageDraw.Draw(image)
    for i, run in enumerate(runs):
        x, y = 10 + (i % 3) * (PANEL_W // 3), 6 + 20 * (i // 3)
        draw.line([(x, y + 7), (x + 24, y + 7)], fill=PALETTE[i % len(PALETTE)], width=3)
        draw.text((x + 30, y), run.name[:30], fill="black", font=font)
    for panel, key in enumerate(keys):
        top = legend_h + panel * PANEL_H
        curves = []
        for i, run in enumerate(runs):
            steps, values = zip(*run.series(key), strict=True) if run.series(key) else ((), ())
            xs = run.axis(by, steps)
            keep = np.isfinite(xs)
            curves.append((PALETTE[i % len(PALETTE)], xs[keep], np.asarray(values)[keep]))
        _panel(draw, font, top, key, AXIS_LABELS[by], curves)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return Path(out)


def _panel(
    draw: ImageDraw.ImageDraw,
    font: Any,
    top: int,
    title: str,
    xlabel: str,
    curves: list[tuple[tuple[int, int, int], np.ndarray, np.ndarray]],
) -> None:
    left, right = MARGIN_L, PANEL_W - MARGIN_R
    y0, y1 = top + MARGIN_T, top + PANEL_H - MARGIN_B
    all_x = np.concatenate([c[1] for c in curves]) if curves else np.zeros(0)
    all_y = np.concatenate([c[2] for c in curves]) if curves else np.zeros(0)
    draw.text((left, top + 8), title, fill="black", font=font)
    draw.rectangle([left, y0, right, y1], outline=(80, 80, 80))
    if all_x.size == 0:
        return
    x_low, x_high = float(all_x.min()), float(all_x.max())
    y_low, y_high = float(all_y.min()), float(all_y.max())
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    pad = (y_high - y_low) * 0.05 or abs(y_high) * 0.05 or 1.0
    y_low, y_high = y_low - pad, y_high + pad

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_low) / (x_high - x_low) * (right - left),
            y1 - (y - y_low) / (y_high - y_low) * (y1 - y0),
        )

    for tick in _ticks(x_low, x_high):
        x, _ = px(tick, y_low)
        draw.line([(x, y1), (x, y1 + 4)], fill=(80, 80, 80))
        draw.text((x - 12, y1 + 6), _tick_label(tick), fill=(60, 60, 60), font=font)
    for tick in _ticks(y_low, y_high, 4):
        _, y = px(x_low, tick)
        draw.line([(left - 4, y), (left, y)], fill=(80, 80, 80))
        draw.line([(left + 1, y), (right - 1, y)], fill=(235, 235, 235))
        draw.text((4, y - 6), _tick_label(tick), fill=(60, 60, 60), font=font)
    draw.text((right - 6 * len(xlabel), y1 + 18), xlabel, fill=(60, 60, 60), font=font)
    for colour, xs, ys in curves:
        points = [px(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)


# ---- the page ------------------------------------------------------------------------------

GRIDS_PER_RUN = 8  # sample grids shown per run on the page, spread over its training
CLIPS_PER_STEP = 4  # audio runs: players for the first clips of each grid's step


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _spread(items: list[Any], count: int) -> list[Any]:
    """`count` items evenly spread over `items`, always keeping the first and the last."""
    if len(items) <= count:
        return items
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def write_html(
    runs: Sequence[Run], header: list[str], rows: list[list[str]], curves: Path, out: Path
) -> Path:
    """One self-contained page (every image and clip inlined): the table, the curves, each
    run's sample grids over time and, for audio runs, a player per clip."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>gandist compare</title>",
        "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "figure{display:inline-block;margin:4px}img.grid{width:160px;image-rendering:pixelated}"
        "</style></head><body><h1>gandist compare</h1>",
        "<table id='runs'><thead><tr>",
        *(f"<th>{esc(h)}</th>" for h in header),
        "</tr></thead><tbody>",
        *("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows),
        "</tbody></table>",
        f"<p id='left-out'>{esc(left_out_note(runs))}</p>",
        f"<h2>Curves</h2><img id='curves' alt='curves' src='{_data_url(curves, 'image/png')}'>",
    ]
    for run in runs:
        parts.append(f"<section class='run'><h2>{esc(run.name)}</h2>")
        for step, path in _spread(sample_grids(run.path), GRIDS_PER_RUN):
            parts.append(
                f"<figure><img class='grid' alt='step {step}' "
                f"src='{_data_url(path, 'image/png')}'><figcaption>step {step}</figcaption>"
                "</figure>"
            )
            # An audio run's grid is a spectrogram sheet; its clips sit in a folder per step.
            for index, clip in enumerate(sample_clips(run.path, step)[:CLIPS_PER_STEP]):
                parts.append(
                    f"<figure><audio controls src='{_data_url(clip, 'audio/wav')}'></audio>"
                    f"<figcaption>step {step}, clip {index}</figcaption></figure>"
                )
        parts.append("</section>")
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out


def compare(
    patterns: Sequence[str | os.PathLike],
    out: str | os.PathLike | None,
    by: str = "images",
    page: str | os.PathLike | None = None,
) -> tuple[str, Path | None]:
    """The comparison table as text; the PNG of the curves when `out` is given (and always
    for the HTML `page`, which inlines it)."""
    if by not in AXES:
        raise ValueError(f"--by must be one of {', '.join(AXES)}, got {by!r}")
    runs = [load_run(path) for path in find_runs(patterns)]
    header, rows = comparison_table(runs)
    path = None
    if out is not None or page is not None:
        path = plot_curves(runs, by, out if out is not None else Path(page).with_suffix(".png"))
    if page is not None:
        assert path is not None
        write_html(runs, header, rows, path, Path(page))
    note = left_out_note(runs)
    return format_table(header, rows) + (f"\n{note}" if note else ""), path
