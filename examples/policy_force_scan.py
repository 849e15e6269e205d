"""Policies in the real twin with CartPole's push force scaled: is a policy's gain tuned to another push?

    python examples/policy_force_scan.py --json docs/results/agents/force_scan.json \
        --policy real_twin_shipped=causvid_env/checkpoints/cartpole/policy \
        --policy v9_seed2=weights/agents/ppo_dream_e4v7_82k_seed2 --scales 0.8,0.9,1.0,1.15 --episodes 20

A dream whose push moves the pole 0.9x as far as the real one could train a policy that pushes as if the real force
were 0.9x; if so, that policy scores best in a real twin whose ``force_mag`` is scaled by 0.9. For each policy and
scale this runs :func:`agents.failure_modes.failure_modes` (seeds 0.., deterministic) in the default variant with
``force_mag = 10 * scale`` and writes the mean frames, their spread, the RMS pole angle and how the episodes ended.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from agents.failure_modes import failure_modes
from causvid_env.rendering import scaled_physics
from models.io import write_json


def scaled_force_world(scale: float, world: str = "cartpole"):
    """The world with its default variant's ``force_mag`` scaled by ``scale`` (every other variant dropped; a scale
    that is not > 0 is refused by ``scaled_physics``)."""
    spec = scaled_physics(world, {"force_mag": scale})
    return dataclasses.replace(spec, variants=(spec.variant(spec.default_variant),))


def force_scan(policies: dict[str, str], scales: list[float], episodes: int, max_steps: int = 125) -> list[dict]:
    rows = []
    for name, policy in policies.items():
        for s in scales:
            r = failure_modes(policy, scaled_force_world(s), episodes, max_steps=max_steps, seed=0)
            rows.append({"policy": name, "force_scale": s, "mean": r["mean"], "std": r["std"],
                         "pole_rms_deg": r["pole_rms_deg"], "counts": r["counts"]})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python examples/policy_force_scan.py", description=__doc__.split("\n")[0])
    p.add_argument("--policy", action="append", required=True, help="NAME=DIRECTORY (repeat for several policies)")
    p.add_argument("--scales", default="0.8,0.9,1.0,1.15", help="comma-separated factors on the push force")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=125, help="episode cap in chunks (125 = 500 frames)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    policies = {}
    for item in args.policy:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--policy: expected NAME=DIRECTORY, got {item!r}")
        policies[name] = path
    scales = [float(s) for s in args.scales.split(",")]
    res = {"command": " ".join(["python examples/policy_force_scan.py", *(argv if argv is not None else sys.argv[1:])]),
           "episodes": args.episodes, "rows": force_scan(policies, scales, args.episodes, args.max_steps)}
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
