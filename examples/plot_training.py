"""Training curves of a pipeline run: every `losses/*` scalar of every stage, one panel each.

    python examples/plot_training.py --run runs/cartpole --out docs/training_curves.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from models.io import read_log  # noqa: E402

STAGES = ("vae", "heads", "teacher", "causal_teacher", "ode_init", "dmd_teacher_forcing", "dmd_self_forcing")


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    run = Path(a.run)
    panels = []
    for stage in STAGES:
        recs = read_log(run / stage / "log.jsonl")
        keys = sorted({k for r in recs for k in r if k.startswith("losses/") or k in ("vae/loss", "vae/psnr")})
        for k in keys:
            pts = [(r["step"], r[k]) for r in recs if k in r]
            panels.append((f"{stage}: {k}", pts))
    if not panels:
        raise ValueError(f"--run: no stage logs found under {run}")
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (title, pts) in zip(axes.flat, panels):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if "psnr" not in title and min(ys) > 0:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(out)
    return out


if __name__ == "__main__":
    main()
