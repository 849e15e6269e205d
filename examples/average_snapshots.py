"""Average the weights of several DiT snapshots of one run (post-hoc weight averaging: a cheap
stand-in for an EMA of the generator in runs trained without `dmd.ema_decay`).

DMD snapshots a few dozen steps apart swing across the gates' bands (held push 0.70x / 0.78x /
0.68x at v9g's steps 350 / 450 / 600); the mean of neighbouring snapshots sits in the middle of
that swing. Every snapshot must share one config (same architecture); the mean is taken in fp32.

    python examples/average_snapshots.py runs/v9g/dmd_self_forcing/model_step{400,450,500} --out runs/v9g_avg
    python examples/average_snapshots.py --run runs/v9g --steps 400:600 --out runs/v9g_avg   # every kept step in [400, 600]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.dit import DiT  # noqa: E402
from distill.training_utils import snapshot_dirs  # noqa: E402
from models.config_utils import config_to_dict  # noqa: E402


def snapshots_in(run: str | Path, first: int, last: int) -> list[Path]:
    """The run's DMD snapshots (`dmd_self_forcing/model_stepN`) with first <= N <= last, in step order."""
    stage = Path(run) / "dmd_self_forcing"
    if not stage.is_dir():
        raise FileNotFoundError(f"--run {str(run)!r} has no dmd_self_forcing/ stage: pass a pipeline run directory")
    found = snapshot_dirs(stage)
    chosen = [p for n, p in found if first <= n <= last]
    if not chosen:
        kept = [n for n, _ in found]
        raise ValueError(f"--steps {first}:{last} matches no snapshot of {stage} (kept steps: {kept})")
    return chosen


def average_snapshots(directories: list[str | Path], weights: list[float] | None = None) -> DiT:
    """-> a DiT whose every tensor is the (weighted) mean of the snapshots' tensors."""
    if len(directories) < 1:
        raise ValueError("average_snapshots: pass at least one snapshot directory")
    if weights is None:
        weights = [1.0] * len(directories)
    if len(weights) != len(directories) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights: need one non-negative weight per snapshot with a positive sum, got {weights}")
    models = [DiT.from_pretrained(d) for d in directories]
    first_cfg = config_to_dict(models[0].config)
    for d, m in zip(directories, models):
        if config_to_dict(m.config) != first_cfg:
            raise ValueError(f"{d} has a different config from {directories[0]}: only snapshots of one architecture average")
    total = float(sum(weights))
    out = DiT(models[0].config)
    states = [m.state_dict() for m in models]
    mean = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            mean[k] = sum(w / total * s[k].float() for w, s in zip(weights, states))
        else:
            mean[k] = v
    out.load_state_dict(mean)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("snapshots", nargs="*", help="snapshot directories (config.json + model.safetensors)")
    ap.add_argument("--run", help="a pipeline run directory: average its DMD snapshots in --steps")
    ap.add_argument("--steps", help="FIRST:LAST, with --run: every kept snapshot step in that range")
    ap.add_argument("--out", required=True, help="directory to write the averaged DiT to")
    args = ap.parse_args(argv)
    if bool(args.run) != bool(args.steps):
        ap.error("--run and --steps go together")
    dirs = [Path(d) for d in args.snapshots]
    if args.run:
        try:
            first, last = (int(x) for x in args.steps.split(":"))
        except ValueError:
            ap.error(f"--steps must be FIRST:LAST (two integers), got {args.steps!r}")
        dirs += snapshots_in(args.run, first, last)
    if not dirs:
        ap.error("pass snapshot directories, or --run and --steps")
    model = average_snapshots(dirs)
    model.save_pretrained(args.out, extra={"averaged_from": [str(d) for d in dirs]})
    print(json.dumps({"out": args.out, "averaged_from": [str(d) for d in dirs]}, indent=2))


if __name__ == "__main__":
    main()
