"""How often does an episode end at its very first step, from a prompt-only reset vs an image reset
from a real frame? (The README's "Rewards and episode ends are predictions" paragraph.)

    python examples/first_step_terminations.py --seeds 21 --json docs/results/first_step_terminations.json

Seeds 0..N-1; the variants (and their prompts) cycle; one random action per episode.
"""
from __future__ import annotations

import argparse
import json
import sys
import numpy as np

from causvid_env.env import CausVidEnv
from causvid_env.real_env import RealWorldEnv
from causvid_env.worlds import get_world
from models.io import write_json


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--seeds", type=int, default=21)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.seeds < 1:
        raise ValueError(f"--seeds: must be >= 1, got {a.seeds}")
    spec = get_world("cartpole")
    env = CausVidEnv("cartpole", checkpoint=a.checkpoint)
    counts = {"prompt": 0, "image": 0}
    for s in range(a.seeds):
        variant = spec.variants[s % len(spec.variants)]
        action = int(np.random.default_rng(s).integers(2))
        real = RealWorldEnv("cartpole", variant=variant.name)
        frame = real.reset(seed=s)[0][-1]
        real.close()
        for mode, options in (("prompt", {"prompt": variant.prompt}), ("image", {"image": frame, "prompt": variant.prompt})):
            env.reset(seed=s, options=options)
            _, _, terminated, _, _ = env.step(action)
            counts[mode] += int(terminated)
    res = {"command": "python examples/first_step_terminations.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "checkpoint": a.checkpoint or "shipped", "episodes_per_mode": a.seeds, "ended_at_first_step": counts}
    print(json.dumps(res, indent=2))
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
