"""Does the dream follow actions? Push right vs push left from the same real start, read the
generated frames with the state probe, and compare with the real twin under the same pushes.

    python -m evaluation.action_following [--checkpoint DIR] [--probe DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from causvid_env.checkpoint import default_checkpoint_dir
from causvid_env.env import CausVidEnv
from causvid_env.real_env import RealWorldEnv
from evaluation.probe import load_probe


def _rollout(env, action: int, chunks: int, stop_when_done: bool):
    """Hold `action` for `chunks` steps after a reset -> (last frame of each chunk, first terminal
    chunk or None). The real twin stops producing frames once its episode ends: its last frame is
    repeated, while the dream keeps generating."""
    frames, terminated_at = [], None
    for k in range(chunks):
        obs, _, term, trunc, _ = env.step(action)
        frames.append(obs[-1])
        if term and terminated_at is None:
            terminated_at = k
        if stop_when_done and (term or trunc):
            frames += [obs[-1]] * (chunks - k - 1)
            break
    return np.stack(frames), terminated_at


def measure(checkpoint=None, probe_dir=None, seeds=(0, 1, 2, 3), seconds: float = 1.0, world: str = "cartpole") -> dict:
    """Per seed and side: probe readings (pole angle deg, cart x m) after `seconds` of a held push,
    in the dream and in the real twin. Returns means and the push-right minus push-left gaps."""
    probe_dir = Path(probe_dir) if probe_dir else (Path(checkpoint) if checkpoint else default_checkpoint_dir(world)) / "probe"
    probe, _ = load_probe(probe_dir)
    dream = CausVidEnv(world, checkpoint=checkpoint, max_episode_steps=10**6, run_on=True)  # watched past its end
    real = RealWorldEnv(world)
    chunks = int(round(seconds * real.world.fps / real.world.frames_per_chunk))
    prompt = real.world.variant().prompt
    out = {"seconds": seconds, "seeds": list(seeds), "dream": {}, "real": {}}
    for name, env, is_dream in (("dream", dream, True), ("real", real, False)):
        res = {}
        for side, action in (("right", 1), ("left", 0)):
            finals, terms = [], []
            for s in seeds:
                start, _ = real.reset(seed=s)
                if is_dream:
                    env.reset(options={"image": start[-1], "prompt": prompt}, seed=s)
                frames, t = _rollout(env, action, chunks, stop_when_done=not is_dream)
                finals.append(probe.predict(frames)[-1])
                terms.append(t)
            finals = np.array(finals)
            res[side] = {"pole_angle_deg": float(finals[:, 0].mean()), "cart_x_m": float(finals[:, 1].mean()),
                         "terminated_within": sum(t is not None for t in terms)}
        res["gap_cart_x_m"] = res["right"]["cart_x_m"] - res["left"]["cart_x_m"]
        res["gap_pole_angle_deg"] = res["right"]["pole_angle_deg"] - res["left"]["pole_angle_deg"]
        out[name] = res
    # the response the dream shows as a fraction of the real one (1.0 = exact; target within +-30%)
    out["response_ratio"] = {k: (out["dream"][k] / out["real"][k] if out["real"][k] else None)
                             for k in ("gap_pole_angle_deg", "gap_cart_x_m")}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="Push right vs left in the dream and the real twin, read with the state probe.")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--probe", default=None)
    p.add_argument("--seconds", type=float, default=1.0, help="how long the push is held (0.24 = 12 frames)")
    p.add_argument("--starts", type=int, default=4, help="real start states (seeds 0..N-1)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.starts < 1:
        raise ValueError(f"--starts: must be >= 1, got {a.starts}")
    res = measure(a.checkpoint, a.probe, seeds=tuple(range(a.starts)), seconds=a.seconds)
    res["command"] = "python -m evaluation.action_following " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
