"""Closed-loop rollouts against the real world, shared by `examples/closed_loop_eval.py` and
`examples/ablation.py` (scored by `evaluation.metrics`, reported by `evaluation.report`).

1. **Real rollouts first.** The real twin (the world's `Simulator`, the one `RealWorldEnv` wraps)
   starts from a seeded state and is driven by a policy that reads the TWIN's true state (or
   plays held random pushes). It runs on past the standard termination, exactly like data
   collection (`causvid_env.policies.play_episode`), until the world's run-on limit (CartPole: 45
   degrees or the track edge) or the horizon; the standard `terminated` flag is recorded per
   frame. The actions it took are then the script for everything else, so every generator sees
   identical actions.
2. **Generators replay the script** from the same start (the twin's first frame, an image reset:
   the still chunk): the few-step student through the env's own `DreamEngine` (batched), the
   many-step bidirectional teacher (guided ODE over clip windows), the many-step causal teacher
   (chunk by chunk with a KV cache), and two baselines that bound the frame error from both sides
   (CALIBRATION.md): repeat-last-frame (the start frame forever) and the VAE's reconstruction of
   the real frames (with the reward/termination heads run on the real latents).

Frame indices below count generated frames: frame 0 is the first frame after the start chunk and
sits at time 1/fps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch

from agents.baselines import BalancingAgent
from causvid_env.policies import make_cartpole_noisy_balance, make_held_pushes, make_random, play_episode
from causvid_env.checkpoint import WorldModel
from causvid_env.engine import DreamEngine
from causvid_env.rendering import Simulator
from causvid_env.worlds import WorldSpec, get_world
from distill.batches import PromptBank
from models.actions import ActionCodec
from models.samplers import Cond, check_temperature, guidance_branch_count, guided_velocity, ode_sample
from models.text import shared_text_encoder
from models.vae import frames_to_tensor, tensor_to_frames

DEFAULT_HORIZONS = (1.0, 2.0, 5.0, 10.0, 30.0)
POLICY_MIX = ("balance", "held_random", "noisy_balance")


# ============================================================================ real rollouts
@dataclass
class RealRollout:
    """One real episode. Per-frame arrays cover the start chunk (F copies of the reset frame, as in
    the dataset) followed by `n` generated-frame slots; `actions[F:]` is the script."""
    seed: int
    variant: str
    prompt: str
    policy: str
    frames: np.ndarray  # (F + n, H, W, 3) uint8
    states: np.ndarray  # (F + n, state_dim)
    actions: np.ndarray  # (F + n, *action_shape); the first F are unused (the still chunk has none)
    rewards: np.ndarray  # (F + n,)
    terminated: np.ndarray  # (F + n,) standard termination flag of each frame
    F: int
    prefix_frames: np.ndarray | None = None  # a real clip the dream is seeded with, ending with the start chunk (F * (1 + k) frames)
    prefix_actions: np.ndarray | None = None  # its per-frame actions (the first F unused)

    @property
    def n(self) -> int:
        """Frames after the start chunk."""
        return len(self.frames) - self.F

    @property
    def n_chunks(self) -> int:
        return self.n // self.F

    def first_termination(self) -> int | None:
        t = np.flatnonzero(self.terminated[self.F:])
        return int(t[0]) if len(t) else None


def make_policy(name: str, spec: WorldSpec, space: gym.Space, rng: np.random.Generator) -> Callable[[np.ndarray], object]:
    """A per-chunk policy `state -> action` that reads the twin's TRUE state.

    balance: the scripted CartPole controller (`agents.baselines.BalancingAgent`);
    noisy_balance: the collection's gated noisy balancer (random when not urgent, ~30% random);
    held_random: a random push held for 2-8 chunks; random: a fresh random action every chunk."""
    if name == "held_random":
        return make_held_pushes(spec, space, rng)
    if name == "random":
        return make_random(spec, space, rng)
    if spec.name != "cartpole" and name in ("balance", "noisy_balance"):
        raise ValueError(f"policy: {name!r} is defined for cartpole only; use 'held_random' or 'random' for {spec.name!r}")
    if name == "balance":
        agent = BalancingAgent()
        return lambda state: agent.act(None, {"state": state})
    if name == "noisy_balance":
        return make_cartpole_noisy_balance(spec, space, rng)
    raise ValueError(f"policy: unknown policy {name!r}; choose from balance, noisy_balance, held_random, random")


def rollout_twin(world: str | WorldSpec, seed: int, policy: str, max_seconds: float, variant: str | None = None) -> RealRollout:
    """Drive the real twin from `reset(seed)` for up to `max_seconds` (or the run-on limit)."""
    spec = get_world(world)
    F = spec.frames_per_chunk
    sim = Simulator(spec, variant)
    rng = np.random.default_rng([seed, 17])
    act = make_policy(policy, spec, sim.action_space, rng)
    first = sim.reset(seed=seed)
    n_max = math.ceil(max_seconds * spec.fps / F - 1e-9) * F  # whole chunks covering the horizon
    ep = play_episode(spec, sim, act, first, n_max)
    sim.close()
    v = sim.variant
    return RealRollout(seed, v.name, v.prompt, policy, np.stack(ep["frames"]), np.stack(ep["states"]).astype(np.float32),
                       np.stack(ep["actions"]), np.asarray(ep["rewards"], np.float32), np.asarray(ep["terminated"], bool), F)


def with_real_clip(ep: RealRollout, chunks: int) -> RealRollout:
    """The same episode seen from after its first `chunks` scripted chunks: those frames (with the
    still chunk before them) become the real clip the dream is seeded with, and the last of them
    is the new start chunk, so every generated frame is compared with the real frame after the clip."""
    if chunks < 1 or ep.n_chunks <= chunks:
        raise ValueError(f"chunks: need 1 <= chunks < the episode's {ep.n_chunks} chunks, got {chunks}")
    s, F = chunks * ep.F, ep.F
    return RealRollout(ep.seed, ep.variant, ep.prompt, ep.policy, ep.frames[s:], ep.states[s:], ep.actions[s:], ep.rewards[s:],
                       ep.terminated[s:], F, prefix_frames=ep.frames[:s + F], prefix_actions=ep.actions[:s + F])


def real_rollouts(world: str, episodes: int, max_seconds: float, seed: int = 10_000, policies: Sequence[str] = POLICY_MIX,
                  variants: Sequence[str | None] | None = None, context_frames: int = 0) -> list[RealRollout]:
    """`episodes` twin rollouts, seeds seed, seed+1, ...; policies (and variants) cycle. `context_frames`
    > 0 (a multiple of F, counting the still chunk): each episode begins with that real clip
    (`with_real_clip`), and `max_seconds` of frames follow it; episodes that end inside the clip are
    skipped (and further seeds drawn)."""
    spec = get_world(world)
    F = spec.frames_per_chunk
    if context_frames < 0 or context_frames % F:
        raise ValueError(f"context_frames: expected 0 or a positive multiple of {F}, got {context_frames}")
    if spec.name != "cartpole":
        policies = [p for p in policies if p not in ("balance", "noisy_balance")] or ["held_random"]
    variants = list(variants) if variants else [None]
    k = max(0, context_frames // F - 1)  # scripted chunks inside the clip
    out, i = [], 0
    while len(out) < episodes:
        if i >= 10 * episodes + 10:
            raise ValueError(f"context_frames={context_frames}: too few real episodes outlast the clip")
        ep = rollout_twin(spec, seed + i, policies[i % len(policies)], max_seconds + k * F / spec.fps, variants[i % len(variants)])
        i += 1
        if k:
            if ep.n_chunks <= k:
                continue
            ep = with_real_clip(ep, k)
        out.append(ep)
    return out


# ============================================================================ generated rollouts
@dataclass
class Generated:
    """What a generator made for one episode, aligned with `RealRollout.frames[F:]`."""
    frames: np.ndarray  # (n, H, W, 3) uint8
    rewards: np.ndarray | None = None  # (n,)
    terminated: np.ndarray | None = None  # (n,) bool

    def first_termination(self) -> int | None:
        if self.terminated is None:
            return None
        t = np.flatnonzero(self.terminated)
        return int(t[0]) if len(t) else None


class PromptTexts:
    """Prompt -> MiniLM tokens, from a run's saved `prompts.pt` (no text model load) or MiniLM.
    Has `encode_one` (what `DreamEngine` wants) and `encode(prompts)` (tokens, mask, is_null)."""

    def __init__(self, bank=None):
        self.bank = bank
        self._enc = None

    @classmethod
    def from_run(cls, run_dir: str | Path | None) -> "PromptTexts":
        p = Path(run_dir) / "prompts.pt" if run_dir is not None else None
        if p is not None and p.is_file():
            return cls(PromptBank.from_state(torch.load(p)))
        return cls()

    @property
    def encoder(self):
        if self._enc is None:
            self._enc = shared_text_encoder("cpu")
        return self._enc

    def encode_one(self, prompt: str):
        if self.bank is not None and prompt in self.bank.index:
            j = self.bank.index[prompt]
            return self.bank.tokens[j], self.bank.masks[j]
        return self.encoder.encode_one(prompt)

    def encode(self, prompts: list[str | None]):
        if self.bank is not None and all(p is None or p in self.bank.index for p in prompts):
            return self.bank.batch(prompts)
        return self.encoder.encode(prompts)


def _batches(episodes: list[RealRollout], batch_size: int):
    """Episodes grouped by similar length (longest first) so padded compute stays small."""
    order = sorted(range(len(episodes)), key=lambda i: -episodes[i].n)
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]


def _chunk_actions(ep: RealRollout, k: int) -> np.ndarray:
    """Per-frame actions of generated chunk k (past the episode's end: its last chunk again)."""
    k = min(k, ep.n_chunks - 1)
    return ep.actions[ep.F * (k + 1): ep.F * (k + 2)]


def _prefix_chunks(ep: RealRollout) -> int:
    """Chunks before the first generated one: the still chunk, plus a real clip's scripted chunks."""
    return 1 if ep.prefix_frames is None else len(ep.prefix_frames) // ep.F


def _batch_prefix_chunks(eps: list[RealRollout]) -> int:
    """The prefix chunks shared by a batch of episodes (a batch is generated in step, so they must agree)."""
    prefix = {_prefix_chunks(ep) for ep in eps}
    if len(prefix) != 1:
        raise ValueError("episodes: every episode of a batch needs a real clip of the same length (or none)")
    return prefix.pop()


def student_generate(model: WorldModel, world: str | WorldSpec, episodes: list[RealRollout], batch_size: int = 8,
                     window_seconds: float | None = None, texts: PromptTexts | None = None, device: str = "cpu",
                     context_noise: float | None = None, temperature: float | None = None) -> list[Generated]:
    """The few-step student, batched through the env's `DreamEngine`: each env is reset from its
    episode's start frame (the image reset of `CausVidEnv`) under the episode's prompt and seed,
    then stepped with the script. Termination by the head does not stop it (we want the whole
    trajectory; the first predicted terminal frame is what is scored)."""
    spec = get_world(world)
    out: list[Generated | None] = [None] * len(episodes)
    for idx in _batches(episodes, batch_size):
        eps = [episodes[i] for i in idx]
        p = _batch_prefix_chunks(eps)
        B = len(eps)
        engine = DreamEngine(model, spec, B, window_seconds, 0, device, texts, context_noise, temperature=temperature)
        override = {}
        for j, ep in enumerate(eps):
            engine.set_prompt(j, ep.prompt)
            engine.seed(j, ep.seed)
            override[j] = engine.encode_frames(ep.frames[:ep.F] if ep.prefix_frames is None else ep.prefix_frames)
        c = engine.c  # latent frames per chunk
        for k in range(p):  # the real clip (or the start chunk) written as context, with its actions
            acts = [None if k == 0 else ep.prefix_actions[k * ep.F:(k + 1) * ep.F] for ep in eps]
            engine.chunk(acts, reset=np.ones(B, bool) if k == 0 else None, override={j: z[:, :, k * c:(k + 1) * c] for j, z in override.items()})
        frames, rewards, terms = [], [], []
        for k in range(max(ep.n_chunks for ep in eps)):
            res = engine.chunk([_chunk_actions(ep, k) for ep in eps])
            frames.append(res.frames), rewards.append(res.frame_rewards), terms.append(res.frame_terminated)
        frames, rewards, terms = (np.concatenate(x, axis=1) for x in (frames, rewards, terms))  # (B, n_max, ...)
        for j, i in enumerate(idx):
            n = episodes[i].n
            out[i] = Generated(frames[j, :n], rewards[j, :n], terms[j, :n])
    return out  # type: ignore[return-value]


def _encode_episode_latents(vae, frames: np.ndarray, piece: int = 64) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> normalised latents (1, C, T/F, h, w), streamed with the causal cache."""
    state = vae.init_stream_state(1)
    zs = []
    for s in range(0, len(frames), piece):
        z, state = vae.encode_step(frames_to_tensor(frames[None, s:s + piece]), state)
        zs.append(z)
    return torch.cat(zs, dim=2)


def decode_with_heads(vae, heads, z: torch.Tensor, piece: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latents (B, C, T, h, w) from an episode start -> frames (B, T*F, H, W, 3) uint8, rewards and
    termination flags (B, T*F), exactly as the env computes them (streaming decode, heads on
    consecutive latent frames, the first one paired with itself)."""
    state = vae.init_stream_state(z.shape[0], z.device)
    xs = []
    for s in range(0, z.shape[2], piece):
        x, state = vae.decode_step(z[:, :, s:s + piece], state)
        xs.append(tensor_to_frames(x))
    r, t = heads(z, None)
    return np.concatenate(xs, axis=1), r.cpu().numpy(), (t > 0).cpu().numpy()


@torch.no_grad()
def vae_reconstruction(model: WorldModel, episodes: list[RealRollout]) -> list[Generated]:
    """Baseline from above: the VAE's reconstruction of the real frames; rewards/terminations from
    the heads on the real latents (the best the heads can do on perfect latents)."""
    out = []
    for ep in episodes:
        full = ep.frames if ep.prefix_frames is None else np.concatenate([ep.prefix_frames[:-ep.F], ep.frames])
        z = _encode_episode_latents(model.vae, full)
        frames, r, t = decode_with_heads(model.vae, model.heads, z)
        s = len(full) - len(ep.frames) + ep.F  # the first frame after the start chunk
        out.append(Generated(frames[0, s:], r[0, s:], t[0, s:]))
    return out


def repeat_last_frame(episodes: list[RealRollout]) -> list[Generated]:
    """Baseline from below: copy the context (the start frame) forever; no reward/termination."""
    return [Generated(np.repeat(ep.frames[ep.F - 1][None], ep.n, axis=0)) for ep in episodes]


def replay_from_state(spec: WorldSpec, ep: RealRollout, state: np.ndarray) -> Generated:
    """The REAL simulator set to `state` (in `ep`'s variant) replaying `ep`'s action script: its
    frames, with the rewards and termination flags the simulator gives them (so physics baselines
    are scored on termination timing like the dream)."""
    sim = Simulator(spec, ep.variant)
    sim.reset(seed=int(ep.seed))
    sim.set_state(np.asarray(state, np.float64))
    steps = [sim.step(a, run_on=True) for a in ep.actions[ep.F:]]
    sim.close()
    return Generated(np.stack([s[0] for s in steps]), np.array([s[1] for s in steps], np.float32),
                     np.array([s[2] for s in steps], bool))


def simulator_from_still_frame(episodes: list[RealRollout], world: str | WorldSpec, seed: int = 0) -> list[Generated]:
    """Baseline from the side: the REAL simulator used as a world model that, like the dream, only
    sees the start frame. It starts from the true pose (positions and angles, which a frame shows)
    with velocities re-drawn from the world's reset distribution (a still frame cannot show them),
    replays the same action script and renders. Its error is what perfect physics costs when the
    initial velocities are unknown: for an unstable system under a script computed from the true
    state, this grows quickly, so it bounds what any image-started world model can reach."""
    spec = get_world(world)
    out = []
    for ep in episodes:
        sim = Simulator(spec, ep.variant)
        sim.reset(seed=int(np.random.default_rng([seed, ep.seed, 29]).integers(2**31 - 1)))  # fresh reset velocities
        drawn = np.asarray(sim.env.state, dtype=np.float64).copy()
        start = ep.states[ep.F - 1].astype(np.float64)  # the start chunk's last frame (after a real clip it moves)
        if len(start) == 4:  # cartpole (x, x_dot, theta, theta_dot): keep the pose, new velocities
            drawn[0], drawn[2] = start[0], start[2]
        else:  # other worlds: keep the whole observable start state except its last (velocity) entry
            drawn[:-1] = start[:-1]
        sim.close()
        out.append(replay_from_state(spec, ep, drawn))
    return out


def simulator_from_probed_clip(episodes: list[RealRollout], world: str | WorldSpec, probe, fit_frames: int = 12) -> list[Generated]:
    """Baseline from the side for clip resets: the REAL simulator started from the state that the
    state probe reads off the real clip the dream is seeded with -- the pose and velocity of a
    quadratic fitted to the probe's readings over the clip's last `fit_frames` frames, taken at its
    last frame -- replaying the same action script. It is perfect physics with what the frames
    show, read by a good state reader (probe error ~0.3 deg): for an unstable system driven by a
    script computed from the true state, its error is what the frames' information costs, a bound
    that no clip-started world model can be expected to beat by much. Cartpole only (the probe
    reads the pole angle and cart position)."""
    spec = get_world(world)
    if spec.name != "cartpole":
        raise ValueError(f"world: simulator_from_probed_clip needs a cartpole probe, got world {spec.name!r}")
    names = tuple(probe.config.target_names)
    ia, ix = names.index("pole_angle_deg"), names.index("cart_x_m")
    dt = 1.0 / spec.fps
    out = []
    for ep in episodes:
        if ep.prefix_frames is None:
            raise ValueError("episodes: simulator_from_probed_clip needs clip resets (closed_loop_eval --context-frames > 0)")
        moving = ep.prefix_frames[ep.F:]  # the scripted chunks after the still one
        k = min(fit_frames, len(moving))
        if k < 3:
            raise ValueError(f"episodes: the clip has {len(moving)} moving frames; the fit needs at least 3")
        read = probe.predict(moving[-k:]).astype(np.float64)  # (k, targets)
        t = (np.arange(k) - (k - 1)) * dt  # the last frame at t = 0
        state = np.zeros(4)
        for col, (pos_i, vel_i, scale) in ((ix, (0, 1, 1.0)), (ia, (2, 3, math.pi / 180.0))):
            c2, c1, c0 = np.polyfit(t, read[:, col], 2)
            state[pos_i] = c0 * scale  # value at t = 0
            state[vel_i] = c1 * scale  # slope at t = 0
        out.append(replay_from_state(spec, ep, state))
    return out


def _episode_cond(net, texts: PromptTexts, eps: list[RealRollout], n_lat: int, codec, with_null: bool):
    """Cond for latent frames 0..n_lat-1 of a batch of episodes (frame 0 = the still chunk, null action;
    with a real clip, its scripted chunks' actions come next, then the script)."""
    F = eps[0].F
    feats = np.zeros((len(eps), n_lat * F, codec.feature_dim), np.float32)
    null = np.ones((len(eps), n_lat * F), bool)
    for j, ep in enumerate(eps):
        p = _prefix_chunks(ep)
        for k in range(1, p):  # the clip's scripted chunks
            feats[j, F * k: F * (k + 1)] = codec.to_features(ep.prefix_actions[F * k: F * (k + 1)])
            null[j, F * k: F * (k + 1)] = False
        for k in range(n_lat - p):
            feats[j, F * (k + p): F * (k + p + 1)] = codec.to_features(_chunk_actions(ep, k))
            null[j, F * (k + p): F * (k + p + 1)] = False
    tok, mask, is_null = texts.encode([ep.prompt for ep in eps])
    text = net.encode_text(tok, mask, is_null)
    null_text = None
    if with_null:
        tok0, mask0, null0 = texts.encode([None] * len(eps))
        null_text = net.encode_text(tok0, mask0, null0)
    return Cond(torch.from_numpy(feats), torch.from_numpy(null), text, null_text)


@torch.no_grad()
def teacher_generate(teacher, model: WorldModel, episodes: list[RealRollout], *, num_steps: int = 50, guidance_text: float = 1.5,
                     guidance_action: float = 2.0, clip_frames: int | None = None, overlap: int | None = None,
                     causal: bool = False, window_frames: int | None = None, batch_size: int = 8,
                     texts: PromptTexts | None = None, seed: int = 0, temperature: float = 1.0) -> list[Generated]:
    """A many-step teacher rolled out under the script, decoded and scored with the checkpoint's
    VAE and heads. `temperature` scales the starting noise of every sampled chunk (1.0: the trained
    noise; below 1 the ODE lands nearer the conditional mode, as the student's sampling temperature).

    Bidirectional (causal=False): the guided ODE sampler (`ode_sample`) with the encoded start chunk
    (or the episode's whole real clip, `with_real_clip`, under its actions) as a clean prefix.
    `clip_frames=None` generates the whole episode as one clip (the paper's teacher); otherwise clip
    windows of the teacher's trained length slide forward, each conditioned on the last `overlap`
    generated latent frames (default half the window), since a bidirectional model is only reliable
    on clips as long as the ones it was trained on.
    Causal (causal=True): chunk by chunk with a KV cache, `num_steps` Euler steps per chunk, CFG
    with one cache row per guidance branch (each branch is its own conditional model)."""
    temperature = check_temperature(temperature, "temperature", "the teacher's trained noise")
    texts = texts or PromptTexts()
    codec = ActionCodec(teacher.config.action_space)
    c = teacher.config.latent_frames_per_chunk
    out: list[Generated | None] = [None] * len(episodes)
    gen = torch.Generator().manual_seed(seed)
    for idx in _batches(episodes, batch_size):
        eps = [episodes[i] for i in idx]
        p = _batch_prefix_chunks(eps)
        if causal and p != 1:
            raise ValueError("episodes: the causal teacher starts from image resets only; pass episodes without a real clip")
        n_lat = (p + max(ep.n_chunks for ep in eps)) * c  # latent frames incl. the start chunk (or the clip)
        cond = _episode_cond(teacher, texts, eps, n_lat, codec, with_null=guidance_text != 1.0)
        z0 = torch.cat([_encode_episode_latents(model.vae, ep.frames[:ep.F] if ep.prefix_frames is None else ep.prefix_frames)
                        for ep in eps])  # (B, C, p * c, h, w)
        B, C, _, h, w = z0.shape
        if causal:
            z = _causal_teacher_rollout(teacher, model.schedule, z0, cond, n_lat, num_steps, guidance_text, guidance_action,
                                        window_frames or n_lat, gen, temperature)
        else:
            z = z0
            L = n_lat if clip_frames is None else max(clip_frames, 2)
            ov = max(1, min(L - 1, overlap if overlap is not None else L // 2))
            while z.shape[2] < n_lat:
                k = min(z.shape[2], 1 if z.shape[2] == 1 else ov)  # context latent frames for this window
                g = min(L - k, n_lat - z.shape[2])
                s = z.shape[2] - k
                sub = cond.frames(s, s + k + g, teacher.config.frames_per_latent)
                noise = torch.randn(B, C, g, h, w, generator=gen) * temperature
                x0, _ = ode_sample(teacher, model.schedule, noise, sub, context=z[:, :, s:], num_steps=num_steps,
                                   guidance_text=guidance_text, guidance_action=guidance_action)
                z = torch.cat([z, x0], dim=2)
        frames, r, t = decode_with_heads(model.vae, model.heads, z)
        s0 = p * eps[0].F  # the first generated frame
        for j, i in enumerate(idx):
            n = episodes[i].n
            out[i] = Generated(frames[j, s0:s0 + n], r[j, s0:s0 + n], t[j, s0:s0 + n])
    return out  # type: ignore[return-value]


def _causal_teacher_rollout(teacher, schedule, z0, cond, n_lat, num_steps, g_text, g_action, window_frames, gen,
                            temperature: float = 1.0) -> torch.Tensor:
    """Chunk-by-chunk many-step sampling of a block-causal teacher with a KV cache, guided by
    `guided_velocity` with one cache row per guidance branch (its batch order)."""
    B = z0.shape[0]
    c = teacher.config.latent_frames_per_chunk
    F = teacher.config.frames_per_latent
    cache = teacher.new_cache(guidance_branch_count(g_text, g_action) * B, window_frames)
    ts = schedule.teacher_timesteps(num_steps)

    def step(x, t, write):  # x (B, C, c, h, w) -> guided velocity (B, C, c, h, w)
        s = cache.next_frame[0].item()

        def chunk_model(xx, tt, af, an, text):  # the branches' batch through the cache
            return teacher.forward_chunk(xx, tt, af, an, text, cache, write=write)

        return guided_velocity(chunk_model, x, torch.full((B, x.shape[2]), t), cond.frames(s, s + x.shape[2], F), g_text, g_action)

    zs = [z0]
    step(z0, 0.0, True)  # the start chunk written as clean context
    while sum(z.shape[2] for z in zs) < n_lat:
        x = torch.randn(B, *z0.shape[1:2], c, *z0.shape[3:], generator=gen) * temperature
        for i in range(len(ts) - 1):
            x = x + (float(ts[i + 1]) - float(ts[i])) * step(x, float(ts[i]), False)
        step(x, 0.0, True)
        zs.append(x)
    return torch.cat(zs, dim=2)[:, :, :n_lat]
