"""Score a policy in the real twin (the number that matters) or in the dream.

    python -m agents.evaluate --policy shipped --world cartpole --real --episodes 100   # the policy in the package
    python -m agents.evaluate --policy runs/ppo_dream --world cartpole --episodes 100
    python -m agents.evaluate --policy random --world cartpole --episodes 100 --json random.json
    python -m agents.evaluate --policy balancing --episodes 10          # CartPole oracle, ~500
    python -m agents.evaluate --policy runs/ppo_dream --dream --checkpoint ckpt/ --episodes 20
    python -m agents.evaluate --policy runs/ppo_a,runs/ppo_b --episodes 100   # their vote (agents.policy_ensemble)

Real episodes use the same observations and action repeat the agent was trained with (one
step = one chunk of F frames, the action held for the chunk; the env's ``obs_mode`` and the
frame stack are read from the policy's config, :mod:`agents.observations`). For CartPole-v1
comparability a real episode's return is the number of real frames survived, truncated at
``max_steps * F`` frames (125 chunks = 500 frames). A dream episode's return is the sum of
the reward head's rewards until its termination head fires or ``max_steps`` chunks pass.

Python API: :func:`evaluate` (returns the summary dict) and :func:`make_agent`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.baselines import BalancingAgent, RandomAgent
from agents.observations import stack_frames
from agents.policy import Policy, load_policy, shipped_policy_dir
from agents.policy_ensemble import PolicyEnsemble
from causvid_env.real_env import RealWorldEnv
from causvid_env.worlds import WorldSpec, get_world
from models.io import write_json

__all__ = ["evaluate", "make_agent", "main"]

AgentFn = Callable[[np.ndarray, dict], Any]


def make_agent(policy: str | Policy | Any, action_space, *, deterministic: bool = True,
               seed: int | None = None) -> AgentFn:
    """``agent(obs, info) -> action`` from a policy directory, ``"random"``, ``"balancing"``,
    a loaded :class:`Policy` or :class:`PolicyEnsemble`, or any object with ``act(obs, info)`` (``"shipped"``: see
    :func:`resolve_policy`)."""
    if isinstance(policy, str):
        if policy == "random":
            policy = RandomAgent(action_space, seed=seed)
        elif policy == "balancing":
            policy = BalancingAgent()
        else:
            policy = resolve_policy(policy)
    if isinstance(policy, (Policy, PolicyEnsemble)):
        return lambda obs, info: policy.act(obs, deterministic=deterministic)
    if not hasattr(policy, "act"):
        raise TypeError(f"policy must be a Policy, a path, or have act(obs, info); got {type(policy).__name__}")
    return policy.act


def resolve_policy(policy: str | Policy | Any, world: str = "cartpole") -> Policy | Any:
    """``"shipped"`` -> the policy shipped for ``world`` (``agents.policy.shipped_policy_dir``);
    a directory -> its :func:`load_policy`; comma-separated directories -> their :class:`PolicyEnsemble`;
    ``"random"``, ``"balancing"`` and objects unchanged."""
    if not isinstance(policy, str) or policy in ("random", "balancing"):
        return policy
    if "," in policy:  # several policy directories vote
        return PolicyEnsemble([resolve_policy(p.strip(), world) for p in policy.split(",")])
    path = shipped_policy_dir(world) if policy == "shipped" else Path(policy)
    if not path.is_dir():
        raise ValueError(f"--policy must be a policy directory, 'shipped', 'random' or 'balancing'; "
                         f"{policy!r} is none of these" + (f" (no {path})" if policy == "shipped" else ""))
    return load_policy(path)


def _make_env(world: str, env: str, *, variant: str | None, checkpoint: str | None, device: str,
              max_steps: int, obs_mode: str = "chunk", frame_stack: int = 1, temperature: float | None = None):
    """The env a policy observing ``obs_mode`` frames stacked ``frame_stack`` deep acts in."""
    spec = get_world(world)
    if env == "real":
        e = RealWorldEnv(world, variant=variant, obs_mode=obs_mode, max_episode_frames=max_steps * spec.frames_per_chunk)
    elif env == "dream":
        from causvid_env.env import CausVidEnv  # the dream needs the world model stack

        e = CausVidEnv(world=world, checkpoint=checkpoint, device=device, obs_mode=obs_mode, max_episode_steps=max_steps,
                       temperature=temperature)
    else:
        raise ValueError(f"env must be 'real' or 'dream', got {env!r}")
    return stack_frames(e, frame_stack) if frame_stack > 1 else e


def reset_episode(e, env: str, seed: int, spec: WorldSpec, variant: str | None = None,
                  real_starts: RealWorldEnv | None = None):
    """Start one episode as :func:`evaluate` does: the real twin with ``seed``; the dream with the
    variant's prompt and, when ``real_starts`` (a real twin) is given, its reset frame for ``seed``
    (an image reset), else the prompt alone. -> ``(obs, info)``."""
    if env == "real":
        return e.reset(seed=seed)
    options = {"prompt": spec.variant(variant).prompt}
    if real_starts is not None:
        start, _ = real_starts.reset(seed=seed)
        options["image"] = start[-1]
    return e.reset(seed=seed, options=options)


def evaluate(policy: str | Policy | Any, world: str = "cartpole", episodes: int = 100, *, env: str = "real",
             variant: str | None = None, checkpoint: str | None = None, device: str = "cpu",
             max_steps: int = 125, seed: int = 0, deterministic: bool = True,
             dream_start: str = "image", progress: bool = True, temperature: float | None = None) -> dict:
    """Run ``episodes`` episodes and return ``{"returns": [...], "mean", "std", "min", "max", ...}``.

    Args:
        policy: see :func:`make_agent`.
        env: ``"real"`` (the real twin) or ``"dream"`` (``CausVidEnv`` with ``checkpoint``).
        variant: world variant (default: the world's default); in the dream it picks the prompt
            and, with ``dream_start="image"``, the real frame the dream starts from.
        max_steps: episode cap in chunks (125 chunks = 500 CartPole frames).
        seed: episode ``i`` resets with seed ``seed + i``.
        dream_start: ``"image"`` starts each dream episode from a real reset frame (plus the
            variant's prompt); ``"prompt"`` from the prompt alone.
        temperature: the dream's sampling temperature (None: the checkpoint's; see ``CausVidEnv``).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if dream_start not in ("image", "prompt"):
        raise ValueError(f"dream_start must be 'image' or 'prompt', got {dream_start!r}")
    spec = get_world(world)
    F = spec.frames_per_chunk
    name = policy if isinstance(policy, str) else type(policy).__name__
    policy = resolve_policy(policy, world)
    seen = policy.config if isinstance(policy, (Policy, PolicyEnsemble)) else None  # baselines read the chunk (or the state)
    e = _make_env(world, env, variant=variant, checkpoint=checkpoint, device=device, max_steps=max_steps,
                  obs_mode=seen.obs_mode if seen else "chunk", frame_stack=seen.frame_stack if seen else 1, temperature=temperature)
    real_starts = RealWorldEnv(world, variant=variant) if env == "dream" and dream_start == "image" else None
    agent = make_agent(policy, e.action_space, deterministic=deterministic, seed=seed)
    returns, lengths, frames_survived = [], [], []
    t0 = time.perf_counter()
    total_steps = 0
    for ep in tqdm(range(episodes), desc=f"evaluate ({env})", disable=not progress):
        obs, info = reset_episode(e, env, seed + ep, spec, variant, real_starts)
        ret, steps, frames = 0.0, 0, 0
        while True:
            obs, r, term, trunc, info = e.step(agent(obs, info))
            ret += float(r)
            steps += 1
            # frames that really happened (the real twin pads a chunk after termination)
            frames += int(np.sum(info["frame_valid"])) if "frame_valid" in info else F
            if term or trunc or steps >= max_steps:
                break
        total_steps += steps
        returns.append(float(frames) if env == "real" else ret)
        lengths.append(steps)
        frames_survived.append(frames)
    elapsed = time.perf_counter() - t0
    e.close()
    if real_starts is not None:
        real_starts.close()
    r = np.asarray(returns)
    return {
        "policy": name,
        "world": world, "env": env, "variant": spec.variant(variant).name, "episodes": episodes,
        "max_steps": max_steps, "max_frames": max_steps * F, "seed": seed, "deterministic": deterministic,
        **({"temperature": e.unwrapped.engine.temperature} if env == "dream" else {}),
        "mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()), "max": float(r.max()),
        "returns": returns, "lengths": lengths, "frames": frames_survived,
        "steps_per_s": total_steps / max(elapsed, 1e-9),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m agents.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="policy directory, 'shipped' (the policy in the package for "
                   "--world), 'random', 'balancing' (CartPole oracle), or comma-separated directories (their vote)")
    p.add_argument("--world", default="cartpole")
    p.add_argument("--episodes", type=int, default=100)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--real", dest="env", action="store_const", const="real", help="score in the real twin (default)")
    g.add_argument("--dream", dest="env", action="store_const", const="dream", help="score in the dream (CausVidEnv)")
    p.set_defaults(env="real")
    p.add_argument("--checkpoint", default=None, help="world-model checkpoint for --dream (default: the shipped one)")
    p.add_argument("--variant", default=None, help="world variant (default: the world's default)")
    p.add_argument("--max-steps", type=int, default=125, help="episode cap in chunks (125 = 500 CartPole frames)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the most likely one")
    p.add_argument("--dream-start", choices=("image", "prompt"), default="image")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--temperature", type=float, default=None,
                   help="--dream: scale of the student's noise draws (default: the checkpoint's, else 1.0, the trained one)")
    p.add_argument("--json", default=None, help="write the summary (with every return) to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = evaluate(args.policy, args.world, args.episodes, env=args.env, variant=args.variant,
                   checkpoint=args.checkpoint, device=args.device, max_steps=args.max_steps, seed=args.seed,
                   deterministic=not args.stochastic, dream_start=args.dream_start, temperature=args.temperature)
    unit = "frames survived" if args.env == "real" else "dream return"
    print(f"{args.policy} in the {args.env} {args.world} ({res['variant']}), {args.episodes} episodes: "
          f"{unit} {res['mean']:.1f} ± {res['std']:.1f} (min {res['min']:.0f}, max {res['max']:.0f}, "
          f"cap {res['max_frames'] if args.env == 'real' else args.max_steps})")
    res["command"] = " ".join(["python -m agents.evaluate", *(argv if argv is not None else sys.argv[1:])])
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
