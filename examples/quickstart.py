"""Quickstart: play the shipped CartPole world model from a real start and write a video.

    python examples/quickstart.py --out quickstart          # dream | real side by side
    python examples/quickstart.py --checkpoint runs/cartpole/checkpoint --seconds 6

Both worlds start from the same real frame and receive the same actions (push right, then left,
then a balancing controller that reads the *real* state), so the video shows how closely the
dream follows the simulator it was distilled from.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def balancing_action(state: np.ndarray) -> int:
    x, x_dot, theta, theta_dot = state
    return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the one shipped with the package)")
    p.add_argument("--world", default="cartpole")
    p.add_argument("--out", default="quickstart")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default=None)
    a = p.parse_args(argv)

    import warnings

    import imageio.v2 as imageio

    # the dream keeps running after its termination head fires: that is the point of the video
    warnings.filterwarnings("ignore", message=".*already returned terminated.*")

    from causvid_env.env import CausVidEnv
    from causvid_env.real_env import RealWorldEnv
    from models.metrics import psnr

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    real = RealWorldEnv(a.world, variant=a.variant)
    dream = CausVidEnv(a.world, checkpoint=a.checkpoint, max_episode_steps=10**6)
    real_obs, real_info = real.reset(seed=a.seed)
    prompt = real.world.variant(a.variant).prompt
    dream_obs, _ = dream.reset(options={"image": real_obs[-1], "prompt": prompt}, seed=a.seed)
    steps = int(a.seconds * real.world.fps / real.world.frames_per_chunk)
    frames, scores, latencies = [], [], []
    state = np.zeros(4)
    real_done = False
    for k in range(steps):
        action = 1 if k < steps // 6 else 0 if k < steps // 3 else balancing_action(state)
        dream_obs, _, d_term, _, info = dream.step(action)
        latencies.append(info["latency_s"])
        if not real_done:
            real_obs, _, r_term, r_trunc, real_info = real.step(action)
            state = real_info["state"][-1]
            real_done = r_term or r_trunc
        for d, r in zip(dream_obs, real_obs):
            frames.append(np.concatenate([d, np.full((d.shape[0], 2, 3), 128, np.uint8), r], axis=1))
        scores.append(psnr(dream_obs, real_obs))
    big = [np.kron(f, np.ones((4, 4, 1), np.uint8)) for f in frames]
    imageio.mimsave(out / "dream_vs_real.mp4", big, fps=real.world.fps)
    imageio.mimsave(out / "dream_vs_real.gif", big[::2], duration=2 * 1000 / real.world.fps, loop=0)
    summary = {"steps": steps, "frames": len(frames), "prompt": prompt,
               "mean_chunk_latency_ms": 1000 * float(np.mean(latencies)),
               "generated_fps": real.world.frames_per_chunk / float(np.mean(latencies)),
               "native_fps": real.world.fps,
               "psnr_first_second": float(np.mean([s for s in scores[: real.world.fps // real.world.frames_per_chunk] if np.isfinite(s)] or [np.inf])),
               "video": str(out / "dream_vs_real.mp4")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
