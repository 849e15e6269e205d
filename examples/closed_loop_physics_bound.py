"""How well can ANY world model replay a controller's actions open loop? The real simulator itself,
started from a slightly wrong state, on the closed-loop protocol's own episodes.

    python examples/closed_loop_physics_bound.py --json docs/results/closed_loop_physics_bound.json

The closed-loop protocol (`examples/closed_loop_eval.py --context-frames 16`) drives the real twin
with controllers that read its TRUE state and replays those actions in the dream. CartPole is
unstable (the pole's error e-folds in about 0.25 s), so an error in the start state grows under a
replayed script whatever the model. This script measures that growth with perfect physics: the
real simulator from the true state at the end of the clip plus Gaussian errors in the pole angle
(`--angle-sd`, degrees) and its rate (each of `--rate-sd`, degrees per second), and from the state
the state probe reads off the clip (`simulator_from_probed_clip`), scored by the same probe and
horizon bins as the closed-loop table, next to repeat-last-frame. A target such as "probe angle
error below repeat-last-frame at 1-2 s" is then read against what perfect physics reaches.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from causvid_env.checkpoint import default_checkpoint_dir
from causvid_env.worlds import get_world
from evaluation.metrics import evaluate_methods
from evaluation.probe import load_probe
from evaluation.rollouts import Generated, real_rollouts, repeat_last_frame, replay_from_state, simulator_from_probed_clip
from models.io import write_json


def simulator_from_perturbed_state(episodes, world: str, angle_sd_deg: float, rate_sd_deg_s: float, seed: int = 0) -> list[Generated]:
    """The real simulator from each episode's true start state with N(0, sd) errors in the pole angle and rate."""
    spec = get_world(world)
    rng = np.random.default_rng([seed, 53])
    out = []
    for ep in episodes:
        s = ep.states[ep.F - 1].astype(np.float64).copy()
        s[2] += math.radians(angle_sd_deg) * rng.normal()
        s[3] += math.radians(rate_sd_deg_s) * rng.normal()
        out.append(replay_from_state(spec, ep, s))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--horizons", default="0.08,0.24,0.48,1,2,5", help="bin edges in seconds")
    p.add_argument("--context-frames", type=int, default=16)
    p.add_argument("--seed", type=int, default=10_000, help="first episode seed (closed_loop_eval's default)")
    p.add_argument("--angle-sd", type=float, default=0.3, help="pole angle error, degrees (the probe's error on real frames)")
    p.add_argument("--rate-sd", type=float, nargs="+", default=[1.0, 3.0, 10.0], help="pole rate errors, degrees per second")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.context_frames <= 0:
        raise ValueError("--context-frames: the bound is for clip resets; pass a positive multiple of 4, e.g. 16")
    horizons = sorted(float(x) for x in a.horizons.split(","))
    spec = get_world("cartpole")
    probe, _ = load_probe(default_checkpoint_dir("cartpole") / "probe")
    eps = real_rollouts("cartpole", a.episodes, horizons[-1], a.seed, context_frames=a.context_frames)
    methods = {"repeat_last_frame": repeat_last_frame(eps),
               "simulator_from_probed_clip": simulator_from_probed_clip(eps, "cartpole", probe)}
    for sd in a.rate_sd:
        methods[f"simulator_from_true_state (angle sd {a.angle_sd:g} deg, rate sd {sd:g} deg/s)"] = \
            simulator_from_perturbed_state(eps, "cartpole", a.angle_sd, sd)
    table, _ = evaluate_methods(methods, eps, horizons, spec.fps, probe)
    angle = {m: {h: round(r["pole_angle_deg_err"], 3) for h, r in rows.items()} for m, rows in table.items()}
    cart = {m: {h: round(r["cart_x_m_err"], 4) for h, r in rows.items()} for m, rows in table.items()}
    result = {"kind": "closed_loop_physics_bound",
              "command": "python examples/closed_loop_physics_bound.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "episodes": a.episodes, "context_frames": a.context_frames, "horizons_s": horizons,
              "pole_angle_error_deg": angle, "cart_x_error_m": cart, "table": table}
    for m, row in angle.items():
        print(f"{m}: angle error " + ", ".join(f"{h} {v:.2f}" for h, v in row.items()))
    if a.json:
        write_json(a.json, result)
    return result


if __name__ == "__main__":
    main()
