"""PPO from pixels, trained in the dream (CausVidVectorEnv) or, as the reference, in the real twin.

In the style of cleanrl's ``ppo_atari.py``: one file read top to bottom, an ``Args`` dataclass,
GAE, the clipped surrogate, a (clipped) value loss, an entropy bonus, minibatch epochs.

    python -m agents.ppo --world cartpole --env real --out runs/agents/ppo_real     # the reference, ~30 min on one core
    python -m agents.ppo --world cartpole --env real --encoder pose --reward-scale 0.025 \
        --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --total-steps 204800 --out runs/agents/ppo_real  # shipped, ~30 min
    python -m agents.ppo --world cartpole --env dream --out runs/agents/ppo_dream   # the shipped world model
    python -m agents.evaluate --policy runs/agents/ppo_dream --real --episodes 100  # scored in the real world

One env step is one chunk (CartPole: 4 frames, the action held for all of them); ``total_steps``
counts chunks summed over envs, ``charts/frames`` the frames. The agent observes what the
dream can show it (:mod:`agents.observations`): by default the last frame of each of the last
``frame_stack = 4`` chunks (``obs_mode="last"``; a still frame shows no velocity). The real twin
is then :class:`agents.observations.LastFrameRealEnv`, which draws only those frames. The
default network (``encoder="rows"``, :class:`agents.policy.RowProfile`) reads each row's ink
centre in the cropped rows, standardised by running statistics that the rollouts update.

Why these defaults (CartPole, one CPU core): the earlier recipe (4-frame chunks, 2x2 pooling,
a CNN, cleanrl's Atari settings, 16 updates of 16x64 steps) scored like random (16.5 frames);
a CNN at full width with stacked frames learned, but slowly (~70 frames after 100k steps);
the row features make the pole's lean and motion numbers and learn within this budget. Their
real episodes all ended with the pole past 12 degrees (docs/results/agents/failure_modes_*.json):
every row's centre moves with the cart, so the lean was a small difference of large correlated
inputs; ``encoder="rows_rel"`` takes the centres relative to each frame's median. Those runs
stalled near 190 frames: stacked last frames give each chunk's mean velocity, not its final one,
which the push held over the last chunk changes by about as much as the velocities' spread.
``encoder="pose"`` (:class:`agents.policy.PoseProfile`) reduces each frame to the cart's column
and the pole's lean and decodes the last two pushes from the cart's curvature (still from the
frames alone); with it the same recipe holds the pole for 500 frames (docs/results/agents/NOTES.md).

Works with any gymnasium ``VectorEnv`` with a uint8 Box observation space and a Discrete (categorical head) or Box
(Gaussian head) action space, in any of Gymnasium 1.x's autoreset modes:

- NEXT_STEP (the default of SyncVectorEnv and CausVidVectorEnv): the step after an episode end
  only resets; its transition is masked out of the loss.
- SAME_STEP: the final observation comes in ``infos["final_obs"]``.
- DISABLED: this script resets finished envs itself, with per-env reset options; that is how
  dream episodes can keep starting from real frames after the first reset.

Truncated episodes (time limit) bootstrap from the value of the final observation; terminated
ones do not.

Outputs in ``--out``: ``policy.safetensors`` + ``policy.json`` (``agents.policy.load_policy``),
``log.jsonl`` (one JSON object per line: ``global_step`` + namespaced scalars),
``returns.json`` (every finished episode's return and length) and ``args.json``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import TransformAction
from tqdm.auto import tqdm

from agents.evaluate import evaluate
from agents.observations import LastFrameRealEnv, VectorFrameStack
from agents.policy import Policy, PolicyConfig, load_policy
from causvid_env.real_env import RealWorldEnv
from causvid_env.rendering import scaled_physics
from causvid_env.worlds import get_world
from models.actions import space_to_dict
from models.config_utils import add_dataclass_args
from models.io import ScalarLogger


@dataclass
class Args:
    world: str = "cartpole"
    """world name (``causvid_env.worlds``)"""
    env: str = "dream"
    """``dream`` (CausVidVectorEnv over ``checkpoint``) or ``real`` (the real twin, the reference)"""
    checkpoint: str | None = None
    """world-model checkpoint directory for ``--env dream`` (None: the one shipped with the package); several,
    comma-separated, train in an ensemble of dreams (``causvid_env.ensemble_vector_env``: the envs shared among them)"""
    out: str = "runs/ppo"
    """output directory (policy, log.jsonl, returns.json, args.json)"""
    seed: int = 1
    """seed of python, numpy, torch and the envs"""
    device: str = "cpu"
    """torch device of the policy and of the dream"""
    threads: int = 1
    """torch CPU threads (``torch.set_num_threads``)"""
    progress: bool = True
    """show a tqdm bar"""
    init_from: str | None = None
    """start from this policy directory's weights and feature statistics (``policy.json`` +
    ``policy.safetensors``; its config must match this run's observation and network)"""

    # environment
    total_steps: int = 250_000
    """total env steps (chunks) summed over all envs"""
    num_envs: int = 8
    """parallel envs (one batched forward in the dream)"""
    max_episode_steps: int = 125
    """episode cap in chunks (125 chunks = 500 CartPole frames, CartPole-v1's limit)"""
    variants: str = "default"
    """world variants to train on: ``default``, ``all``, or a comma-separated list; in the real
    twin env ``i`` uses variant ``i mod n``, in the dream each reset draws one at random"""
    image_reset_fraction: float = 0.5
    """dream only: fraction of resets that start from a real frame (a ``RealWorldEnv`` reset
    with a random seed) plus its variant's prompt; the rest start from the prompt alone"""
    window_seconds: float | None = None
    """dream only: KV-cache window of ``CausVidVectorEnv``"""
    action_noise: float = 0.0
    """probability, per env and decision, that the env executes a uniformly random action instead of the policy's
    (domain randomisation: pushes the agent does not choose; PPO learns from the action the policy drew). Training
    only: the periodic real-twin scores and ``agents.evaluate`` act without it"""
    physics_scale: str = ""
    """real only: physics constants of the training twin scaled, ``KEY=SCALE[,KEY=SCALE]`` (``force_mag=0.88``: train
    against a 12% weaker push, as in a dream that under-pushes). The periodic real-twin scores and ``agents.evaluate``
    keep the true physics"""
    obs_mode: str = "last"
    """``last`` (each chunk's last frame; the real twin then draws only that frame) or ``chunk``
    (all F frames); both are observation modes of the dream env"""
    frame_stack: int = 4
    """stack the last this many observations (needs ``obs_mode=last``): 4 last frames show
    the motion of the last 3 chunks (240 ms), which one frame cannot"""
    eval_every: int = 0
    """every this many updates (0: never) score the policy in the real twin (``eval/real_return``)"""
    eval_episodes: int = 10
    """real episodes per periodic evaluation (seeds 10_000.., deterministic actions)"""

    # algorithm (cleanrl's ppo.py settings for CartPole, more minibatch epochs, no value clipping)
    learning_rate: float = 3e-4
    """Adam learning rate"""
    anneal_lr: bool = True
    """linearly anneal the learning rate to 0 (steadies the final policy)"""
    num_steps: int = 64
    """rollout length per env per update"""
    gamma: float = 0.99
    """discount per chunk (0.99 per 4 frames: a horizon of ~400 frames)"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    reward_scale: float | None = None
    """multiplier of the env reward for learning (None: 1 / frames_per_chunk, so a CartPole
    chunk alive is worth 1); logged returns are never scaled"""
    num_minibatches: int = 8
    """minibatches per epoch"""
    update_epochs: int = 8
    """epochs over each rollout (the rows encoder's MLP is cheap: more epochs, fewer env steps)"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float = 0.2
    """surrogate clipping coefficient"""
    clip_vloss: bool = False
    """clip the value loss like the policy (off, as in Stable-Baselines3: values here reach ~100
    and would move 0.2 an update)"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """gradient clipping norm"""
    target_kl: float | None = None
    """stop the epochs early once the approximate KL exceeds this"""
    save_every: int = 10
    """save the policy every this many updates (and at the end)"""

    # policy network (agents.policy.PolicyConfig)
    crop_rows: tuple[int, ...] = (16, 52)
    """rows kept (top, bottom; empty: all): CartPole's poles and cart lie in rows 17-50 of 64"""
    grayscale: bool = True
    """average colour channels before the CNN"""
    downsample: tuple[int, ...] = (1, 1)
    """average-pool factor before the CNN, rows,columns (or one for both); full width keeps
    the 1-pixel pole's lean"""
    encoder: str = "rows"
    """``rows`` (each row's ink centre and mass: the pole's lean as numbers, agents.policy.RowProfile),
    ``rows_rel`` (the centres relative to each frame's median centre, which is added),
    ``pose`` (per frame the cart's column and the pole's lean, with their differences and second
    differences: 12 numbers, agents.policy.PoseProfile) or ``cnn`` (strided convolutions)"""
    channels: tuple[int, ...] = (16, 32, 32)
    """channels of the strided convolutions (``cnn``)"""
    hidden: int = 64
    """width of the shared dense layer(s)"""

    # filled in at runtime
    batch_size: int = 0
    """num_envs * num_steps (computed)"""
    minibatch_size: int = 0
    """batch_size // num_minibatches (computed)"""
    num_iterations: int = 0
    """total_steps // batch_size (computed)"""


# ----------------------------------------------------------------------------- envs


def variant_list(world: str, variants: str) -> list[str]:
    spec = get_world(world)
    if variants == "default":
        return [spec.variant().name]
    if variants == "all":
        return list(spec.variant_names)
    names = [v.strip() for v in variants.split(",") if v.strip()]
    for n in names:
        spec.variant(n)  # ValueError naming the known variants
    return names


def check_observation(args: Args) -> None:
    if args.obs_mode not in ("chunk", "last"):
        raise ValueError(f"obs_mode must be 'chunk' or 'last', got {args.obs_mode!r}")
    if args.frame_stack < 1 or (args.frame_stack > 1 and args.obs_mode != "last"):
        raise ValueError(f"frame_stack must be 1, or more with obs_mode='last'; got {args.frame_stack} "
                         f"with obs_mode={args.obs_mode!r}")


def stacked(envs: gym.vector.VectorEnv, args: Args) -> gym.vector.VectorEnv:
    return VectorFrameStack(envs, args.frame_stack) if args.frame_stack > 1 else envs


def parse_physics_scale(text: str) -> dict[str, float]:
    """``"force_mag=0.88,length=1.1"`` -> ``{"force_mag": 0.88, "length": 1.1}`` (empty text: no scaling)."""
    scales = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        key, sep, value = (x.strip() for x in item.partition("="))
        try:
            scale = float(value)
        except ValueError:
            scale = float("nan")
        if not (sep and key and scale > 0) or key in scales:
            raise ValueError(f"physics_scale: expected KEY=SCALE with SCALE > 0, each key once (e.g. force_mag=0.88), got {item!r}")
        scales[key] = scale
    return scales


def make_real_envs(args: Args) -> gym.vector.VectorEnv:
    """The real twin, one ``SyncVectorEnv`` sub-env per env, observed like the dream (``stacked``);
    its physics scaled by ``args.physics_scale``."""
    scales = parse_physics_scale(args.physics_scale)
    spec = scaled_physics(args.world, scales) if scales else get_world(args.world)
    names = variant_list(args.world, args.variants)
    frames = args.max_episode_steps * spec.frames_per_chunk

    def make(variant: str) -> gym.Env:
        if args.obs_mode == "last":
            return LastFrameRealEnv(spec, variant=variant, max_episode_frames=frames)
        return RealWorldEnv(spec, variant=variant, max_episode_frames=frames)

    return stacked(gym.vector.SyncVectorEnv([lambda v=names[i % len(names)]: make(v) for i in range(args.num_envs)]),
                   args)


class DreamStarts:
    """Per-env reset options for the dream: a variant's prompt, and for a fraction of resets a
    real frame of that variant (a ``RealWorldEnv`` reset with a random seed)."""

    def __init__(self, world: str, variants: list[str], image_fraction: float, rng: np.random.Generator):
        if not 0.0 <= image_fraction <= 1.0:
            raise ValueError(f"image_reset_fraction must lie in [0, 1], got {image_fraction}")
        self.spec, self.variants, self.image_fraction, self.rng = get_world(world), variants, image_fraction, rng
        self._real: dict[str, RealWorldEnv] = {}

    def sample(self) -> dict[str, Any]:
        v = self.variants[int(self.rng.integers(len(self.variants)))]
        opts: dict[str, Any] = {"prompt": self.spec.variant(v).prompt}
        if self.rng.random() < self.image_fraction:
            env = self._real.setdefault(v, RealWorldEnv(self.spec, variant=v))
            obs, _ = env.reset(seed=int(self.rng.integers(2**31 - 1)))
            opts["image"] = obs[-1]
        return opts

    def options(self, n: int) -> list[dict[str, Any]]:
        return [self.sample() for _ in range(n)]


def make_dream_envs(args: Args, starts: DreamStarts | None = None):
    """``CausVidVectorEnv`` (or, for a comma-separated ``checkpoint``, a ``DreamEnsembleVectorEnv``) whose
    automatic resets draw their options from ``starts``."""
    from causvid_env.vector_env import CausVidVectorEnv  # the dream needs the world-model stack

    kwargs = dict(world=args.world, device=args.device, window_seconds=args.window_seconds, obs_mode=args.obs_mode,
                  max_episode_steps=args.max_episode_steps,
                  reset_options_fn=(lambda i, rng: starts.sample()) if starts is not None else None)
    checkpoints = dream_checkpoints(args.checkpoint)
    if len(checkpoints) > 1:
        from causvid_env.ensemble_vector_env import DreamEnsembleVectorEnv

        envs = DreamEnsembleVectorEnv(args.num_envs, checkpoints, **kwargs)
    else:
        envs = CausVidVectorEnv(args.num_envs, checkpoint=checkpoints[0], **kwargs)
    return stacked(envs, args)


def check_action_noise(probability: float) -> None:
    """ValueError naming ``action_noise`` unless it is a probability."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"action_noise must lie in [0, 1] (a probability per env and decision), got {probability}")


def with_action_noise(envs: gym.vector.VectorEnv, probability: float, seed: int) -> gym.vector.VectorEnv:
    """``envs`` whose every env, at each step, executes a uniformly random action with ``probability``
    instead of the one it is given (``gymnasium.wrappers.vector.TransformAction``); 0 returns ``envs``."""
    check_action_noise(probability)
    if probability == 0.0:
        return envs
    space = copy.deepcopy(envs.single_action_space)
    space.seed(seed)
    rng = np.random.default_rng(seed)

    def perturb(actions):
        actions = np.array(actions, copy=True)
        for i in np.flatnonzero(rng.random(len(actions)) < probability):
            actions[i] = space.sample()
        return actions

    return TransformAction(envs, perturb)


def dream_checkpoints(checkpoint: str | None) -> list[str | None]:
    """``--checkpoint``'s directories: None (the shipped one), one, or a comma-separated ensemble."""
    if checkpoint is None:
        return [None]
    names = [c.strip() for c in str(checkpoint).split(",")]
    if any(not c for c in names):
        raise ValueError(f"checkpoint: empty entry in {checkpoint!r}; pass one directory or a comma-separated list")
    return names


def batched_options(per_env: list[dict[str, Any]]) -> dict[str, list]:
    """[{"prompt": p, "image": im}, {"prompt": p2}] -> {"prompt": [p, p2], "image": [im, None]}."""
    keys = sorted({k for o in per_env for k in o})
    return {k: [o.get(k) for o in per_env] for k in keys}


# ----------------------------------------------------------------------------- training


def train(args: Args, envs: gym.vector.VectorEnv | None = None,
          reset_options: Callable[[int], list[dict[str, Any]]] | None = None) -> dict:
    """Train PPO; returns ``{"returns": [...], "lengths": [...], "global_step": ..., "out": ...}``.

    ``envs`` overrides the vector env built from ``args.env``; ``reset_options(n)`` gives the
    per-env options of ``n`` resets (used at the first reset and, in DISABLED mode, at each one).
    """
    if args.env not in ("dream", "real"):
        raise ValueError(f"env must be 'dream' or 'real', got {args.env!r}")
    if args.num_envs < 1 or args.num_steps < 1:
        raise ValueError("num_envs and num_steps must be >= 1")
    check_action_noise(args.action_noise)  # before the (slow) dream is built
    if args.physics_scale and args.env != "real":
        raise ValueError(f"physics_scale: scales the real twin's physics (--env real); got env {args.env!r}")
    parse_physics_scale(args.physics_scale)
    check_observation(args)
    args.batch_size = args.num_envs * args.num_steps
    if args.num_minibatches < 1 or args.batch_size % args.num_minibatches:
        raise ValueError(f"num_minibatches ({args.num_minibatches}) must divide num_envs * num_steps ({args.batch_size})")
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = max(1, args.total_steps // args.batch_size)
    spec = get_world(args.world)
    F = spec.frames_per_chunk
    reward_scale = 1.0 / F if args.reward_scale is None else args.reward_scale
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    for name in ("log.jsonl",):
        (out / name).unlink(missing_ok=True)
    logger = ScalarLogger(out / "log.jsonl", step_key="global_step")  # time: seconds since the start

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)

    # env setup
    if envs is None:
        if args.env == "real":
            envs = make_real_envs(args)
        else:
            starts = DreamStarts(args.world, variant_list(args.world, args.variants), args.image_reset_fraction, rng)
            envs = make_dream_envs(args, starts)
            reset_options = reset_options or starts.options
    assert envs.num_envs == args.num_envs, (envs.num_envs, args.num_envs)
    envs = with_action_noise(envs, args.action_noise, seed=args.seed + 7_919)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not (isinstance(obs_space, gym.spaces.Box) and obs_space.dtype == np.uint8):
        raise ValueError(f"envs: need a uint8 Box observation space (frames), got {obs_space}")
    mode = AutoresetMode(envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))

    cfg = PolicyConfig(obs_shape=obs_space.shape, action_space=space_to_dict(act_space), obs_mode=args.obs_mode,
                       frame_stack=args.frame_stack, crop_rows=args.crop_rows, grayscale=args.grayscale,
                       downsample=args.downsample, encoder=args.encoder, channels=args.channels, hidden=args.hidden)
    agent = Policy(cfg).to(device)
    if args.init_from:
        warm_start(agent, args.init_from)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # rollout storage (observations stay uint8: 4x64x96x3 = 72 KiB each, chunk or stack)
    T, N = args.num_steps, args.num_envs
    obs = torch.zeros((T, N, *obs_space.shape), dtype=torch.uint8, device=device)
    act_shape = () if agent.discrete else tuple(act_space.shape)
    actions = torch.zeros((T, N, *act_shape), dtype=torch.long if agent.discrete else torch.float32, device=device)
    logprobs = torch.zeros((T, N), device=device)
    rewards = torch.zeros((T, N), device=device)
    terms = torch.zeros((T, N), device=device)  # episode terminated after this step: no bootstrap
    dones = torch.zeros((T, N), device=device)  # episode ended (term or trunc): GAE chain cut
    trunc_values = torch.zeros((T, N), device=device)  # V(final obs) for truncated steps
    valid = torch.ones((T, N), device=device)  # 0 for NEXT_STEP's reset-only transitions
    values = torch.zeros((T, N), device=device)

    def initial_options():
        return batched_options(reset_options(N)) if reset_options is not None else None

    global_step, start_time = 0, time.time()
    next_obs_np, _ = envs.reset(seed=args.seed, options=initial_options())
    next_obs = torch.as_tensor(next_obs_np, device=device)
    pending_reset = np.zeros(N, dtype=bool)  # NEXT_STEP: the env resets on its next step
    ep_ret, ep_len = np.zeros(N), np.zeros(N, dtype=np.int64)
    all_returns, all_lengths, all_steps = [], [], []
    evals: list[dict] = []  # periodic real-twin scores (eval_every)

    bar = tqdm(total=args.num_iterations * args.batch_size, disable=not args.progress, desc=f"ppo ({args.env})",
               unit="step")
    for iteration in range(1, args.num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        agent.eval()
        for step in range(T):
            global_step += N
            obs[step] = next_obs
            valid[step] = torch.as_tensor(~pending_reset, dtype=torch.float32)
            agent.update_normalizer(next_obs)  # the row features' running statistics (NormalizeObservation's role)
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            values[step], actions[step], logprobs[step] = value, action, logprob

            next_obs_np, reward, term, trunc, infos = envs.step(agent.to_env_action(action))
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
            done = term | trunc
            real = ~pending_reset  # transitions that really happened (NEXT_STEP resets do not)
            rewards[step] = torch.as_tensor(np.asarray(reward, np.float32) * reward_scale * real, device=device)
            terms[step] = torch.as_tensor(term & real, dtype=torch.float32, device=device)
            dones[step] = torch.as_tensor(done & real, dtype=torch.float32, device=device)

            # the final observation of each finished episode (for the truncation bootstrap)
            final_obs = next_obs_np
            if mode == AutoresetMode.SAME_STEP and done.any():
                final_obs = np.array(next_obs_np, copy=True)
                for i in np.flatnonzero(done):
                    final_obs[i] = infos["final_obs"][i]
            if (trunc & real).any():
                idx = np.flatnonzero(trunc & real)
                with torch.no_grad():
                    fo = torch.as_tensor(np.asarray(final_obs)[idx], device=device)
                    trunc_values[step, torch.as_tensor(idx)] = agent.get_value(fo)

            # episode statistics (unscaled rewards)
            ep_ret += np.where(real, reward, 0.0)
            ep_len += real
            member = infos.get("member") if isinstance(infos, dict) else None  # an ensemble of dreams names its member
            for i in np.flatnonzero(done & real):
                all_returns.append(float(ep_ret[i]))
                all_lengths.append(int(ep_len[i]))
                all_steps.append(global_step)
                per_member = {f"charts__episodic_frames_member{int(member[i])}": ep_len[i] * F} if member is not None else {}
                logger.log(global_step, charts__episodic_return=ep_ret[i], charts__episodic_length=ep_len[i],
                           charts__episodic_frames=ep_len[i] * F, **per_member)
                ep_ret[i], ep_len[i] = 0.0, 0

            if mode == AutoresetMode.NEXT_STEP:
                pending_reset = done & real
            elif mode == AutoresetMode.DISABLED and done.any():
                opts = batched_options(reset_options(int(done.sum()))) if reset_options is not None else {}
                # per-env option lists cover all envs; entries of envs not being reset are ignored
                if opts:
                    full = {k: [None] * N for k in opts}
                    for j, i in enumerate(np.flatnonzero(done)):
                        for k in opts:
                            full[k][i] = opts[k][j]
                    opts = full
                reset_obs, _ = envs.reset(options={"reset_mask": done.copy(), **opts})
                next_obs_np = np.where(done.reshape(-1, *[1] * (np.ndim(reset_obs) - 1)), reset_obs, next_obs_np)
            next_obs = torch.as_tensor(np.asarray(next_obs_np), device=device)
        bar.update(T * N)

        # GAE: a truncated step bootstraps from V(final obs); a terminated one from 0; the
        # lambda-chain never crosses an episode end.
        with torch.no_grad():
            next_value = agent.get_value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(N, device=device)
            for t in reversed(range(T)):
                nextvalues = next_value if t == T - 1 else values[t + 1]
                nextvalues = torch.where(dones[t].bool() & ~terms[t].bool(), trunc_values[t], nextvalues)
                delta = rewards[t] + args.gamma * nextvalues * (1.0 - terms[t]) - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * (1.0 - dones[t]) * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        # flatten the batch, dropping NEXT_STEP's reset-only transitions
        keep = valid.reshape(-1).bool()
        b_obs = obs.reshape((-1, *obs_space.shape))[keep]
        b_actions = actions.reshape((-1, *act_shape))[keep]
        b_logprobs, b_advantages = logprobs.reshape(-1)[keep], advantages.reshape(-1)[keep]
        b_returns, b_values = returns.reshape(-1)[keep], values.reshape(-1)[keep]
        nb = b_obs.shape[0]
        mb_size = max(1, nb // args.num_minibatches)

        agent.train()
        clipfracs = []
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(nb, device=device)
            for start in range(0, nb, mb_size):
                mb_inds = b_inds[start:start + mb_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv and len(mb_inds) > 1:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # policy loss: the clipped surrogate
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # value loss
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef)
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        sps = global_step / (time.time() - start_time)
        logger.log(global_step, charts__learning_rate=optimizer.param_groups[0]["lr"],
                   charts__frames=global_step * F, charts__SPS=sps, charts__FPS=sps * F,
                   losses__value_loss=v_loss.item(), losses__policy_loss=pg_loss.item(),
                   losses__entropy=entropy_loss.item(), losses__old_approx_kl=old_approx_kl.item(),
                   losses__approx_kl=approx_kl.item(), losses__clipfrac=float(np.mean(clipfracs)),
                   losses__explained_variance=explained_var)
        if args.eval_every and (iteration % args.eval_every == 0 or iteration == args.num_iterations):
            t_eval = time.time()
            score = evaluate(agent, args.world, args.eval_episodes, max_steps=args.max_episode_steps, seed=10_000,
                             progress=False)
            agent.eval()
            evals.append({"global_step": global_step, "frames": global_step * F, "real_returns": score["returns"],
                          "real_mean": score["mean"], "real_std": score["std"],
                          "train_recent_mean": float(np.mean(all_returns[-20:])) if all_returns else None})
            logger.log(global_step, eval__real_return=score["mean"], eval__real_return_std=score["std"])
            start_time += time.time() - t_eval  # SPS counts training time only
        recent = all_returns[-20:]
        bar.set_postfix(ret=f"{np.mean(recent):.1f}" if recent else "-", sps=f"{sps:.0f}")
        if iteration % args.save_every == 0 or iteration == args.num_iterations:
            _save(agent, out, args, global_step, all_returns, all_lengths, all_steps, evals, F)

    bar.close()
    envs.close()
    return {"returns": all_returns, "lengths": all_lengths, "global_step": global_step, "out": str(out),
            "steps_per_s": global_step / (time.time() - start_time), "evals": evals}


def warm_start(agent: Policy, directory: str) -> None:
    """Copy a saved policy's weights and row statistics into ``agent`` (same config, or ValueError)."""
    src = load_policy(directory)
    if src.config != agent.config:
        raise ValueError(f"--init-from {directory}: its PolicyConfig {src.config} differs from this run's {agent.config}")
    agent.load_state_dict(src.state_dict())


def _save(agent: Policy, out: Path, args: Args, global_step: int, returns, lengths, steps, evals, F: int) -> None:
    info = {"trained_in": args.env, "world": args.world, "checkpoint": args.checkpoint, "global_step": global_step,
            "frames": global_step * F, "seed": args.seed}
    agent.save(out, info=info)
    (out / "returns.json").write_text(json.dumps(
        {"env": args.env, "world": args.world, "frames_per_chunk": F, "global_step": steps, "episodic_return": returns,
         "episodic_length": lengths, "evals": evals}, indent=None))


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> Args:
    """``Args`` from the command line (``models.config_utils.add_dataclass_args``): ``--total-steps
    1000`` sets ``total_steps``; booleans take ``--flag``/``--no-flag``; tuples take comma-separated values."""
    p = argparse.ArgumentParser(prog="python -m agents.ppo", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_args(p, Args, skip=("batch_size", "minibatch_size", "num_iterations"), choices={"env": ("dream", "real")})
    return Args(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    res = train(args)
    r = res["returns"][-20:]
    print(f"trained {res['global_step']} steps at {res['steps_per_s']:.0f} steps/s; last {len(r)} episodic returns "
          f"{np.mean(r) if r else float('nan'):.1f}; policy in {res['out']}")
    return res


if __name__ == "__main__":
    main()
