"""How a controller's episodes end in a dream: the state probe reads the dream's frames chunk by
chunk, so an ending is either a fall the frames show (the probe reads the pole past CartPole's
12 deg or the cart past 2.4 m) or the termination head firing on a pole the frames still show up.

    python examples/dream_policy_falls.py --episodes 20 --json out.json                  # the shipped policy, shipped dream
    python examples/dream_policy_falls.py --checkpoint runs/ck/x --episodes 20 --json out.json
    python examples/dream_policy_falls.py --controller probe_balancer --episodes 20 --json out.json
    python examples/dream_policy_falls.py --controller probe_balancer --real --episodes 20 --json out.json

Controllers: `policy`, the shipped real-twin PPO policy (its own encoder of the frames; the script
also records whether that encoder reads the push it made last off the cart's curvature, the cue
it was trained to decode in the real twin); and
`probe_balancer`, CartPole's linear state feedback (`agents.baselines.BalancingAgent`'s gains) on
the state the probe reads off each chunk's 4 frames (pose at the last frame, rates from a line
fitted through the 4): a controller whose only view of the frames is the probe, so the dream and
the real twin (`--real`) can be compared under it, the policy's own reading of the frames aside.

Episodes start like `python -m agents.evaluate --policy shipped --dream` (image resets from real
starts, seed i for episode i, the default variant's prompt), so the lengths match its figures.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.baselines import BalancingAgent  # noqa: E402
from agents.evaluate import _make_env, make_agent, reset_episode, resolve_policy  # noqa: E402
from agents.policy import PoseProfile  # noqa: E402
from causvid_env.real_env import RealWorldEnv  # noqa: E402
from causvid_env.checkpoint import default_checkpoint_dir  # noqa: E402
from causvid_env.worlds import get_world  # noqa: E402
from evaluation.probe import load_probe, probe_state  # noqa: E402
from models.io import write_json  # noqa: E402

ANGLE_LIMIT_DEG = 12.0  # CartPole-v1 terminates past 12 deg (0.2095 rad) or 2.4 m
CART_LIMIT_M = 2.4


def last_frame(obs: np.ndarray) -> np.ndarray:
    """The newest frame of an observation: (H, W, 3), or the last of a (k, H, W, 3) stack or chunk."""
    return obs[-1] if obs.ndim == 4 else obs


CONTROLLERS = ("policy", "probe_balancer")


def decoded_last_push(policy, obs: np.ndarray) -> float:
    """The push (+1 right, -1 left, soft) the policy's pose encoder decodes from the cart's curvature
    for the newest chunk of its observation stack (`agents.policy.PoseProfile`): what the policy
    believes it did last."""
    with torch.no_grad():
        return float(PoseProfile.raw(policy.preprocess(torch.as_tensor(np.asarray(obs))[None]))[0, -1])


def run(checkpoint: str | None, episodes: int, temperature: float | None, max_steps: int = 125, seed: int = 0,
        controller: str = "policy", real: bool = False) -> dict:
    if episodes < 1:
        raise ValueError(f"--episodes: must be >= 1, got {episodes}")
    if controller not in CONTROLLERS:
        raise ValueError(f"--controller: expected one of {CONTROLLERS}, got {controller!r}")
    spec = get_world("cartpole")
    ckpt = Path(checkpoint) if checkpoint else default_checkpoint_dir("cartpole")
    probe, _ = load_probe(ckpt / "probe" if (ckpt / "probe").is_dir() else default_checkpoint_dir("cartpole") / "probe")
    names = list(probe.config.target_names)
    ia, ix = names.index("pole_angle_deg"), names.index("cart_x_m")
    if controller == "policy":
        policy = resolve_policy("shipped", "cartpole")
        obs_mode, stack = policy.config.obs_mode, policy.config.frame_stack
    else:
        obs_mode, stack = "chunk", 1
    env = _make_env("cartpole", "real" if real else "dream", variant=None, checkpoint=checkpoint, device="cpu",
                    max_steps=max_steps, obs_mode=obs_mode, frame_stack=stack, temperature=temperature)
    starts = None if real else RealWorldEnv("cartpole")  # the dream's image resets
    if controller == "policy":
        agent = make_agent(policy, env.action_space, deterministic=True, seed=seed)
    else:
        balancer = BalancingAgent()

        def agent(obs, info):
            return balancer.act(info={"state": probe_state(probe.predict(obs), ia, ix, spec.fps)})
    rows = []
    for ep in range(episodes):
        obs, info = reset_episode(env, "real" if real else "dream", seed + ep, spec, real_starts=starts)
        frames, actions, term, steps, agree = [last_frame(obs)], [], False, 0, []
        while steps < max_steps:
            a = agent(obs, info)
            obs, _, term, trunc, info = env.step(a)
            actions.append(int(a))
            frames.append(last_frame(obs))
            steps += 1
            if controller == "policy" and steps >= 3:  # the stack holds 3+ chunks after the reset: both pushes decodable
                agree.append(decoded_last_push(policy, obs) * (2 * int(a) - 1) > 0)
            if term or trunc:
                break
        read = probe.predict(np.stack(frames))
        angle, cart = read[:, ia], read[:, ix]
        fell = bool(abs(angle[-1]) >= ANGLE_LIMIT_DEG or abs(cart[-1]) >= CART_LIMIT_M)
        rows.append({"seed": seed + ep, "chunks": steps, "terminated": bool(term), "frames_show_a_fall": fell if term else None,
                     "final_angle_deg": float(angle[-1]), "final_cart_x_m": float(cart[-1]),
                     "max_abs_angle_deg": float(np.abs(angle).max()), "angle_per_chunk_deg": [round(float(v), 2) for v in angle],
                     "actions": actions, "push_read_right": [bool(v) for v in agree]})
    env.close()
    if starts is not None:
        starts.close()
    ended = [r for r in rows if r["terminated"]]
    return {"kind": "dream_policy_falls", "controller": controller, "env": "real" if real else "dream",
            "checkpoint": None if real else str(ckpt), "episodes": episodes,
            "temperature": None if real else env.unwrapped.engine.temperature, "angle_limit_deg": ANGLE_LIMIT_DEG, "cart_limit_m": CART_LIMIT_M,
            "mean_chunks": float(np.mean([r["chunks"] for r in rows])),
            "terminated": len(ended),
            "terminations_the_frames_show": sum(bool(r["frames_show_a_fall"]) for r in ended),
            "median_final_abs_angle_deg": float(np.median([abs(r["final_angle_deg"]) for r in ended])) if ended else None,
            "push_read_right_fraction": (float(np.mean([v for r in rows for v in r["push_read_right"]]))
                                         if any(r["push_read_right"] for r in rows) else None),
            "episodes_detail": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="world-model checkpoint (default: the shipped one)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the checkpoint's)")
    p.add_argument("--controller", default="policy", choices=CONTROLLERS)
    p.add_argument("--real", action="store_true", help="run in the real twin instead of the dream")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    res = run(a.checkpoint, a.episodes, a.temperature, controller=a.controller, real=a.real)
    res["command"] = "python examples/dream_policy_falls.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"{res['terminated']} of {a.episodes} episodes ended ({res['mean_chunks']:.1f} chunks on average); the probe reads a "
          f"fall in {res['terminations_the_frames_show']} of them; median |angle| at the end {res['median_final_abs_angle_deg']}; "
          f"the policy's encoder reads its last push right in {res['push_read_right_fraction']} of the decisions")
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
