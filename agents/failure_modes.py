"""Why a policy's real CartPole episodes end: the pole past 12 degrees, the cart past |x| = 2.4,
or the time limit (the simulator state at the terminal frame, from ``info["state"]``); and how
tightly it holds the pole meanwhile (the RMS pole angle over the episode's frames: a policy that
lets the pole swing wide falls now and then, one that holds it near upright does not).

    python -m agents.failure_modes --policy shipped --episodes 20 --json docs/results/agents/failure_modes_shipped.json
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from agents.evaluate import _make_env, make_agent, resolve_policy
from causvid_env.worlds import get_world
from models.io import write_json

THETA_LIMIT, X_LIMIT = math.radians(12.0), 2.4


def failure_modes(policy, world: str = "cartpole", episodes: int = 20, *, max_steps: int = 125, seed: int = 0) -> dict:
    """Per episode: frames, the end (``pole``, ``cart``, ``both`` or ``time``), the terminal state
    and the largest |x| reached; and the counts of each end."""
    policy = resolve_policy(policy, world)
    cfg = policy.config
    e = _make_env(world, "real", variant=None, checkpoint=None, device="cpu", max_steps=max_steps,
                  obs_mode=cfg.obs_mode, frame_stack=cfg.frame_stack)
    agent = make_agent(policy, e.action_space)
    F = get_world(world).frames_per_chunk
    rows = []
    for ep in range(episodes):
        obs, info = e.reset(seed=seed + ep)
        frames, max_x, term, sq = 0, 0.0, False, 0.0
        for _ in range(max_steps):
            obs, _, term, trunc, info = e.step(agent(obs, info))
            valid = np.asarray(info["frame_valid"])
            frames += int(valid.sum())
            states = np.asarray(info["state"])[valid]
            max_x = max(max_x, float(np.abs(states[:, 0]).max()))
            sq += float((states[:, 2] ** 2).sum())
            if term or trunc:
                break
        x, x_dot, theta, theta_dot = (float(v) for v in states[-1])
        pole, cart = abs(theta) > THETA_LIMIT, abs(x) > X_LIMIT
        end = "time" if not term else ("both" if pole and cart else "pole" if pole else "cart" if cart else "other")
        rows.append({"seed": seed + ep, "frames": frames, "end": end, "x": x, "x_dot": x_dot, "theta": theta,
                     "theta_dot": theta_dot, "max_abs_x": max_x,
                     "pole_rms_deg": math.degrees(math.sqrt(sq / max(frames, 1)))})
    e.close()
    ends = [r["end"] for r in rows]
    f = np.asarray([r["frames"] for r in rows], float)
    return {"episodes": episodes, "seed": seed, "mean": float(f.mean()), "std": float(f.std()),
            "pole_rms_deg": float(np.mean([r["pole_rms_deg"] for r in rows])),
            "counts": {k: ends.count(k) for k in ("pole", "cart", "both", "time", "other")},
            "frames_by_end": {k: [r["frames"] for r in rows if r["end"] == k] for k in sorted(set(ends))},
            "episodes_detail": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m agents.failure_modes", description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True)
    p.add_argument("--world", default="cartpole")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    res = failure_modes(args.policy, args.world, args.episodes, seed=args.seed)
    res["policy"] = args.policy
    res["command"] = " ".join(["python -m agents.failure_modes", *(argv if argv is not None else sys.argv[1:])])
    print(f"{args.policy}: {res['mean']:.1f} +- {res['std']:.1f} frames, pole RMS {res['pole_rms_deg']:.2f} deg; ends {res['counts']}; "
          f"frames by end {res['frames_by_end']}")
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
