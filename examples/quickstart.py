"""Quickstart: play the shipped CartPole world model from a real start and write a video.

    python examples/quickstart.py --out quickstart          # dream | real side by side
    python examples/quickstart.py --checkpoint runs/cartpole/checkpoint --seconds 6

Both worlds start from the same real frame and receive the same actions (one chunk pushed right,
one pushed left, then a balancing controller that reads the *real* state), so the video shows how
closely the dream follows the simulator it was distilled from. The comparison ends when the real
episode ends (the pole falls or the cart leaves the track): after that there is no truth to
compare with. The dream is not stopped by its own termination head; the summary says when it fired.
Writes OUT/dream_vs_real.mp4, OUT/dream_vs_real.gif and OUT/summary.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def balancing_action(state: np.ndarray) -> int:
    x, x_dot, theta, theta_dot = state
    return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)


def say(text: str) -> None:
    print(f"[quickstart] {text}", file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the one shipped with the package)")
    p.add_argument("--world", default="cartpole")
    p.add_argument("--out", default="quickstart", help="output directory")
    p.add_argument("--seconds", type=float, default=6.0, help="longest rollout (it ends earlier if the real episode ends)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default=None, help="world variant (default: the world's default)")
    a = p.parse_args(argv)

    import imageio.v2 as imageio

    from causvid_env.env import CausVidEnv
    from causvid_env.real_env import RealWorldEnv
    from models.metrics import psnr

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say("loading the world model ...")
    real = RealWorldEnv(a.world, variant=a.variant)
    # run_on: the dream is watched past its own termination (the real side decides when we stop)
    dream = CausVidEnv(a.world, checkpoint=a.checkpoint, max_episode_steps=10**6, timing_info=True, run_on=True)
    real_obs, real_info = real.reset(seed=a.seed)
    prompt = real.world.variant(a.variant).prompt
    dream_obs, _ = dream.reset(seed=a.seed, options={"image": real_obs[-1], "prompt": prompt})
    F, fps = real.world.frames_per_chunk, real.world.fps
    steps = int(a.seconds * fps / F)
    say(f"loaded in {time.perf_counter() - t0:.1f} s; generating up to {steps} chunks ({a.seconds:g} s of video at {fps} fps)")
    gap = np.full((dream_obs.shape[1], 2, 3), 128, np.uint8)
    frames = [np.concatenate([d, gap, r], axis=1) for d, r in zip(dream_obs, real_obs)]
    scores, latencies = [], []
    state = real_info["state"][-1]
    dream_end = real_end = None
    for k in range(steps):
        action = 1 if k == 0 else 0 if k == 1 else balancing_action(state)
        dream_obs, _, d_term, _, info = dream.step(action)
        real_obs, _, r_term, r_trunc, real_info = real.step(action)
        latencies.append(info["latency_s"])
        state = real_info["state"][-1]
        valid = real_info["frame_valid"]  # frames after the real episode's last one are padding
        for d, r in zip(dream_obs[valid], real_obs[valid]):
            frames.append(np.concatenate([d, gap, r], axis=1))
        scores.append(psnr(dream_obs[valid], real_obs[valid]))
        if d_term and dream_end is None:
            dream_end = (k + 1) * F / fps
            say(f"the dream's termination head fired at t={dream_end:.2f} s (the dream goes on)")
        if (k + 1) % (fps // F) == 0:
            say(f"t={(k + 1) * F / fps:4.1f} s  chunk {k + 1}/{steps}  {1000 * np.mean(latencies[-(fps // F):]):.0f} ms/chunk  "
                f"PSNR dream vs real {scores[-1]:.1f} dB")
        if r_term or r_trunc:
            real_end = real_info["frame"] / fps
            say(f"the real episode {'terminated' if r_term else 'was truncated'} at t={real_end:.2f} s: "
                "stopping (nothing real left to compare with)")
            break
    big = [np.kron(f, np.ones((4, 4, 1), np.uint8)) for f in frames]
    # the frames are 256 x 776: even, which is all libx264 needs (no resize, no imageio warning)
    imageio.mimsave(out / "dream_vs_real.mp4", big, fps=fps, macro_block_size=2)
    imageio.mimsave(out / "dream_vs_real.gif", big[::2], duration=2 * 1000 / fps, loop=0)
    first_second = [s for s in scores[: fps // F] if np.isfinite(s)]
    summary = {"chunks": len(scores), "frames": len(frames), "prompt": prompt, "seed": a.seed,
               "actions": "push right 1 chunk, push left 1 chunk, then a balancing controller on the real state",
               "real_episode_end_s": real_end, "dream_termination_s": dream_end,
               "mean_chunk_latency_ms": 1000 * float(np.mean(latencies)),
               "generated_fps": F / float(np.mean(latencies)),
               "native_fps": fps,
               "psnr_first_second": float(np.mean(first_second)) if first_second else None,
               "video": str(out / "dream_vs_real.mp4")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
