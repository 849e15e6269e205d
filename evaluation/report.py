"""Reporting of evaluation results: markdown tables, standard JSON, plots, frame strips and videos.

`examples/compose_results.py` composes docs/RESULTS.md from the JSON these write.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation.metrics import FrameScores, horizon_key
from models.metrics import psnr_from_mse

METRIC_COLUMNS = [("psnr", "PSNR dB", "{:.2f}"), ("psnr_fg", "PSNR fg dB", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                  ("pole_angle_deg_err", "angle err deg", "{:.2f}"), ("cart_x_m_err", "cart x err m", "{:.3f}"),
                  ("reward_mae", "reward MAE", "{:.3f}"), ("term_frame_acc", "term acc", "{:.3f}"),
                  ("term_timing_mae_frames", "term timing err (frames)", "{:.1f}"),
                  ("term_within_4_frames", "term within 4 fr", "{:.2f}"), ("term_missed", "term missed", "{}"),
                  ("term_false", "term false", "{}"), ("return_mae", "return MAE", "{:.1f}")]


def _fmt(v, f: str) -> str:
    if isinstance(v, str):  # "inf" / "nan" after a JSON round trip
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f.format(v)


def markdown_table(table: dict, horizons: Sequence[float], title_col: str = "method") -> str:
    """Rows (horizon, method); columns: the metrics any method has."""
    cols = [c for c in METRIC_COLUMNS if any(c[0] in row for m in table.values() if "skipped" not in m for row in m.values())]
    head = f"| horizon | {title_col} | eps | frames | " + " | ".join(c[1] for c in cols) + " |"
    lines = [head, "|" + "---|" * (4 + len(cols))]
    for h in horizons:
        for m, rows in table.items():
            if "skipped" in rows:
                continue
            r = rows[horizon_key(h)]
            lines.append(f"| {r['bin_seconds'][0]:g}-{h:g} s | {m} | {r['episodes']} | {r['frames']} | "
                         + " | ".join(_fmt(r.get(c[0]), c[2]) for c in cols) + " |")
    skipped = [f"- {m}: skipped ({rows['skipped']})" for m, rows in table.items() if "skipped" in rows]
    return "\n".join(lines + ([""] + skipped if skipped else [])) + "\n"


def plot_error_vs_time(per_frame: dict[str, list[FrameScores]], fps: int, path: str | Path, bin_frames: int = 25,
                       target_names: Sequence[str] = ()) -> Path:
    """PSNR (non-white pixels), SSIM and probe errors vs time since the start, binned every
    `bin_frames`, pooled over the episodes still running; one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("psnr_fg", "PSNR non-white px (dB)"), ("ssim", "SSIM")] + [(n, n.replace("_", " ") + " abs err") for n in target_names]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    axes = np.atleast_1d(axes)
    for m, scores in per_frame.items():
        n_max = max(len(s.se) for s in scores)
        ts, vals = [], {p[0]: [] for p in panels}
        for s0 in range(0, n_max, bin_frames):
            sl = slice(s0, s0 + bin_frames)
            live = [s for s in scores if len(s.se) > s0]
            fg_n = sum(s.fg_n[sl].sum() for s in live)
            ts.append((s0 + min(bin_frames, n_max - s0) / 2 + 1) / fps)
            vals["psnr_fg"].append(psnr_from_mse(sum(s.fg_se[sl].sum() for s in live) / fg_n) if fg_n else np.nan)
            vals["ssim"].append(np.mean(np.concatenate([s.ssim[sl] for s in live])))
            for j, name in enumerate(target_names):
                vals[name].append(np.mean(np.concatenate([s.probe_err[sl, j] for s in live])) if live[0].probe_err is not None else np.nan)
        for ax, (key, label) in zip(axes, panels):
            y = np.asarray(vals[key], float)
            y[~np.isfinite(y)] = np.nan
            ax.plot(ts, y, label=m, marker="." if len(ts) < 30 else None)
            ax.set_xscale("log")
            ax.set_xlabel("time since start (s)")
            ax.set_title(label)
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    for ax in axes:  # plain seconds on the log axis (the default labels every minor tick in powers of ten, overlapping)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _upscale(frames: np.ndarray, k: int) -> np.ndarray:
    return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def strip_image(rows: dict[str, np.ndarray], times_s: Sequence[float], fps: int, path: str | Path, scale: int = 2) -> Path:
    """A grid: one row per source (each (n, H, W, 3) generated-frame aligned), one column per time."""
    import imageio.v3 as iio

    n = min(len(v) for v in rows.values())
    idx = [min(n - 1, max(0, int(round(t * fps)) - 1)) for t in times_s]
    pad = 2
    grid = []
    for frames in rows.values():
        cells = [np.pad(frames[i], ((pad, pad), (pad, pad), (0, 0)), constant_values=128) for i in idx]
        grid.append(np.concatenate(cells, axis=1))
    img = _upscale(np.concatenate(grid, axis=0), scale)
    iio.imwrite(path, img)
    (Path(path).with_suffix(".txt")).write_text("rows: " + ", ".join(rows) + "\ncolumns (s): " + ", ".join(f"{t:g}" for t in
                                                 [(i + 1) / fps for i in idx]) + "\n")
    return Path(path)


def side_by_side_video(pairs: list[tuple[np.ndarray, np.ndarray]], fps: int, path: str | Path, scale: int = 3) -> Path:
    """MP4 of (dream | real) per episode, episodes one after another with 10 grey frames between."""
    import imageio.v2 as iio2

    with iio2.get_writer(str(path), fps=fps, codec="libx264", quality=5, macro_block_size=2) as w:
        for k, (dream, real) in enumerate(pairs):
            sep = np.full((dream.shape[1], 2, 3), 128, np.uint8)
            for a, b in zip(dream, real):
                w.append_data(_upscale(np.concatenate([a, sep, b], axis=1), scale))
            if k < len(pairs) - 1:
                for _ in range(10):
                    w.append_data(np.full_like(_upscale(np.concatenate([dream[0], sep, real[0]], axis=1), scale), 128))
    return Path(path)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0
