"""Closed-loop evaluation against the real world, shared by `examples/closed_loop_eval.py` and
`examples/ablation.py`.

1. **Real rollouts first.** The real twin (the world's `Simulator`, the one `RealWorldEnv` wraps)
   starts from a seeded state and is driven by a policy that reads the TWIN's true state (or
   plays held random pushes). It runs on past the standard termination, exactly like data
   collection, until the world's run-on limit (CartPole: 45 degrees or the track edge) or the
   horizon; the standard `terminated` flag is recorded per frame. The actions it took are then
   the script for everything else, so every generator sees identical actions.
2. **Generators replay the script** from the same start (the twin's first frame, an image reset:
   the still chunk): the few-step student through the env's own `DreamEngine` (batched), the
   many-step bidirectional teacher (guided ODE over clip windows), the many-step causal teacher
   (chunk by chunk with a KV cache), and two baselines that bound the frame error from both sides
   (CALIBRATION.md): repeat-last-frame (the start frame forever) and the VAE's reconstruction of
   the real frames (with the reward/termination heads run on the real latents).
3. **Metrics per frame, pooled per horizon bin** (h_{i-1}, h_i] seconds over the frames where the
   twin is still running: PSNR (all pixels and non-white pixels, from the pooled MSE), SSIM, the
   state probe's error (pole angle, cart position) of the generated frame against the twin's true
   state, reward error, and termination timing (the generator's first predicted terminal frame vs
   the twin's first, counted among the first h seconds).

Frame indices below count generated frames: frame 0 is the first frame after the start chunk and
sits at time 1/fps.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch

from causvid_env.checkpoint import WorldModel
from causvid_env.worlds import WorldSpec, get_world
from models.metrics import nonwhite_mask

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
    from distill import collect

    if name == "held_random":
        return collect.make_held_pushes(spec, space, rng)
    if name == "random":
        return collect.make_random(spec, space, rng)
    if spec.name != "cartpole" and name in ("balance", "noisy_balance"):
        raise ValueError(f"policy: {name!r} is defined for cartpole only; use 'held_random' or 'random' for {spec.name!r}")
    if name == "balance":
        from agents.baselines import BalancingAgent
        agent = BalancingAgent()
        return lambda state: agent.act(None, {"state": state})
    if name == "noisy_balance":
        return collect.make_cartpole_noisy_balance(spec, space, rng)
    raise ValueError(f"policy: unknown policy {name!r}; choose from balance, noisy_balance, held_random, random")


def rollout_twin(world: str | WorldSpec, seed: int, policy: str, max_seconds: float, variant: str | None = None) -> RealRollout:
    """Drive the real twin from `reset(seed)` for up to `max_seconds` (or the run-on limit)."""
    from causvid_env.rendering import Simulator

    spec = get_world(world)
    F = spec.frames_per_chunk
    sim = Simulator(spec, variant)
    rng = np.random.default_rng([seed, 17])
    act = make_policy(policy, spec, sim.action_space, rng)
    frame, state = sim.reset(seed=seed)
    space = sim.action_space
    a_shape = space.shape or ()
    a_dtype = np.int64 if isinstance(space, gym.spaces.Discrete) else np.float32
    frames, states = [frame] * F, [state] * F
    actions = [np.zeros(a_shape, a_dtype)] * F
    rewards, term = [0.0] * F, [False] * F
    n_max = math.ceil(max_seconds * spec.fps / F - 1e-9) * F  # whole chunks covering the horizon
    while len(frames) - F < n_max:
        a = np.asarray(act(state), dtype=a_dtype).reshape(a_shape)
        for _ in range(F):
            frame, r, t, state = sim.step(a, run_on=True)
            frames.append(frame), states.append(state), actions.append(a), rewards.append(r), term.append(t)
        if spec.run_on_limit(state) if spec.run_on_limit is not None else any(term[-F:]):
            break
    sim.close()
    v = sim.variant
    return RealRollout(seed, v.name, v.prompt, policy, np.stack(frames), np.stack(states).astype(np.float32),
                       np.stack(actions), np.asarray(rewards, np.float32), np.asarray(term, bool), F)


def real_rollouts(world: str, episodes: int, max_seconds: float, seed: int = 10_000, policies: Sequence[str] = POLICY_MIX,
                  variants: Sequence[str | None] | None = None) -> list[RealRollout]:
    """`episodes` twin rollouts, seeds seed, seed+1, ...; policies (and variants) cycle."""
    spec = get_world(world)
    if spec.name != "cartpole":
        policies = [p for p in policies if p not in ("balance", "noisy_balance")] or ["held_random"]
    variants = list(variants) if variants else [None]
    return [rollout_twin(spec, seed + i, policies[i % len(policies)], max_seconds, variants[i % len(variants)])
            for i in range(episodes)]


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
            from distill.batches import PromptBank
            return cls(PromptBank.from_state(torch.load(p)))
        return cls()

    @property
    def encoder(self):
        if self._enc is None:
            from models.text import shared_text_encoder
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


def student_generate(model: WorldModel, world: str | WorldSpec, episodes: list[RealRollout], batch_size: int = 8,
                     window_seconds: float | None = None, texts: PromptTexts | None = None, device: str = "cpu",
                     context_noise: float | None = None) -> list[Generated]:
    """The few-step student, batched through the env's `DreamEngine`: each env is reset from its
    episode's start frame (the image reset of `CausVidEnv`) under the episode's prompt and seed,
    then stepped with the script. Termination by the head does not stop it (we want the whole
    trajectory; the first predicted terminal frame is what is scored)."""
    from causvid_env.engine import DreamEngine

    spec = get_world(world)
    out: list[Generated | None] = [None] * len(episodes)
    for idx in _batches(episodes, batch_size):
        eps = [episodes[i] for i in idx]
        B = len(eps)
        engine = DreamEngine(model, spec, B, window_seconds, 0, device, texts, context_noise)
        override = {}
        for j, ep in enumerate(eps):
            engine.set_prompt(j, ep.prompt)
            engine.seed(j, ep.seed)
            override[j] = engine.encode_frames(ep.frames[:ep.F])
        engine.chunk([None] * B, reset=np.ones(B, bool), override=override)  # the start chunk (context)
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
    from models.vae import frames_to_tensor
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
    from models.vae import tensor_to_frames
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
        z = _encode_episode_latents(model.vae, ep.frames)
        frames, r, t = decode_with_heads(model.vae, model.heads, z)
        out.append(Generated(frames[0, ep.F:], r[0, ep.F:], t[0, ep.F:]))
    return out


def repeat_last_frame(episodes: list[RealRollout]) -> list[Generated]:
    """Baseline from below: copy the context (the start frame) forever; no reward/termination."""
    return [Generated(np.repeat(ep.frames[ep.F - 1][None], ep.n, axis=0)) for ep in episodes]


def simulator_from_still_frame(episodes: list[RealRollout], world: str | WorldSpec, seed: int = 0) -> list[Generated]:
    """Baseline from the side: the REAL simulator used as a world model that, like the dream, only
    sees the start frame. It starts from the true pose (positions and angles, which a frame shows)
    with velocities re-drawn from the world's reset distribution (a still frame cannot show them),
    replays the same action script and renders. Its error is what perfect physics costs when the
    initial velocities are unknown: for an unstable system under a script computed from the true
    state, this grows quickly, so it bounds what any image-started world model can reach."""
    spec = get_world(world)
    from causvid_env.rendering import Simulator

    out = []
    for ep in episodes:
        sim = Simulator(spec, ep.variant)
        sim.reset(seed=int(np.random.default_rng([seed, ep.seed, 29]).integers(2**31 - 1)))  # fresh reset velocities
        drawn = np.asarray(sim.env.state, dtype=np.float64).copy()
        start = ep.states[0].astype(np.float64)
        if len(start) == 4:  # cartpole (x, x_dot, theta, theta_dot): keep the pose, new velocities
            drawn[0], drawn[2] = start[0], start[2]
        else:  # other worlds: keep the whole observable start state except its last (velocity) entry
            drawn[:-1] = start[:-1]
        sim.env.state = drawn
        frames = []
        for a in ep.actions[ep.F:]:
            frame, _, _, _ = sim.step(a, run_on=True)
            frames.append(frame)
        sim.close()
        out.append(Generated(np.stack(frames)))
    return out


def _episode_cond(net, texts: PromptTexts, eps: list[RealRollout], n_lat: int, codec, with_null: bool):
    """Cond for latent frames 0..n_lat-1 of a batch of episodes (frame 0 = the still chunk, null action)."""
    from models.samplers import Cond
    F = eps[0].F
    feats = np.zeros((len(eps), n_lat * F, codec.feature_dim), np.float32)
    null = np.ones((len(eps), n_lat * F), bool)
    for j, ep in enumerate(eps):
        for k in range(n_lat - 1):
            feats[j, F * (k + 1): F * (k + 2)] = codec.to_features(_chunk_actions(ep, k))
            null[j, F * (k + 1): F * (k + 2)] = False
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
                     texts: PromptTexts | None = None, seed: int = 0) -> list[Generated]:
    """A many-step teacher rolled out under the script, decoded and scored with the checkpoint's
    VAE and heads.

    Bidirectional (causal=False): the guided ODE sampler (`ode_sample`) with the encoded start chunk
    as a clean prefix. `clip_frames=None` generates the whole episode as one clip (the paper's
    teacher); otherwise clip windows of the teacher's trained length slide forward, each
    conditioned on the last `overlap` generated latent frames (default half the window), since
    a bidirectional model is only reliable on clips as long as the ones it was trained on.
    Causal (causal=True): chunk by chunk with a KV cache, `num_steps` Euler steps per chunk, CFG
    with one cache row per guidance branch (each branch is its own conditional model)."""
    from models.actions import ActionCodec
    from models.samplers import ode_sample

    texts = texts or PromptTexts()
    codec = ActionCodec(teacher.config.action_space)
    c = teacher.config.latent_frames_per_chunk
    out: list[Generated | None] = [None] * len(episodes)
    gen = torch.Generator().manual_seed(seed)
    for idx in _batches(episodes, batch_size):
        eps = [episodes[i] for i in idx]
        n_lat = 1 + max(ep.n_chunks for ep in eps) * c  # latent frames incl. the start chunk
        cond = _episode_cond(teacher, texts, eps, n_lat, codec, with_null=guidance_text != 1.0)
        z0 = torch.cat([_encode_episode_latents(model.vae, ep.frames[:ep.F]) for ep in eps])  # (B, C, 1, h, w)
        B, C, _, h, w = z0.shape
        if causal:
            z = _causal_teacher_rollout(teacher, model.schedule, z0, cond, n_lat, num_steps, guidance_text, guidance_action,
                                        window_frames or n_lat, gen)
        else:
            z = z0
            L = n_lat if clip_frames is None else max(clip_frames, 2)
            ov = max(1, min(L - 1, overlap if overlap is not None else L // 2))
            while z.shape[2] < n_lat:
                k = min(z.shape[2], 1 if z.shape[2] == 1 else ov)  # context latent frames for this window
                g = min(L - k, n_lat - z.shape[2])
                s = z.shape[2] - k
                sub = cond.frames(s, s + k + g, teacher.config.frames_per_latent)
                noise = torch.randn(B, C, g, h, w, generator=gen)
                x0, _ = ode_sample(teacher, model.schedule, noise, sub, context=z[:, :, s:], num_steps=num_steps,
                                   guidance_text=guidance_text, guidance_action=guidance_action)
                z = torch.cat([z, x0], dim=2)
        frames, r, t = decode_with_heads(model.vae, model.heads, z)
        F = eps[0].F
        for j, i in enumerate(idx):
            n = episodes[i].n
            out[i] = Generated(frames[j, F:F + n], r[j, F:F + n], t[j, F:F + n])
    return out  # type: ignore[return-value]


def _causal_teacher_rollout(teacher, schedule, z0, cond, n_lat, num_steps, g_text, g_action, window_frames, gen) -> torch.Tensor:
    """Chunk-by-chunk many-step sampling of a block-causal teacher with a KV cache (and CFG)."""
    from models.samplers import Cond, _cat_text

    B = z0.shape[0]
    c = teacher.config.latent_frames_per_chunk
    F = teacher.config.frames_per_latent
    null_a = torch.ones_like(cond.action_null)
    branches = [(cond.text, cond.action_null)]
    if g_action != 1.0 or g_text != 1.0:
        branches.append((cond.text, null_a))
    if g_text != 1.0:
        branches.append((cond.null_text, null_a))
    n = len(branches)
    bc = Cond(cond.action_feats.repeat(n, 1, 1), torch.cat([b[1] for b in branches]),
              _cat_text([b[0] for b in branches]) if n > 1 else cond.text)
    cache = teacher.new_cache(n * B, window_frames)
    ts = schedule.teacher_timesteps(num_steps)

    def step(x, t, write):  # x (B, C, c, h, w) -> guided velocity (B, C, c, h, w)
        s = cache.next_frame[0].item()
        sub = bc.frames(s, s + x.shape[2], F)
        v = teacher.forward_chunk(x.repeat(n, 1, 1, 1, 1), torch.full((n * B, x.shape[2]), t), sub.action_feats, sub.action_null,
                                  bc.text, cache, write=write).split(B)
        if n == 1:
            return v[0]
        out = v[1] + g_action * (v[0] - v[1])
        return out + (g_text - 1.0) * (v[1] - v[2]) if n == 3 else out

    zs = [z0]
    step(z0, 0.0, True)  # the start chunk written as clean context
    while sum(z.shape[2] for z in zs) < n_lat:
        x = torch.randn(B, *z0.shape[1:2], c, *z0.shape[3:], generator=gen)
        for i in range(len(ts) - 1):
            x = x + (float(ts[i + 1]) - float(ts[i])) * step(x, float(ts[i]), False)
        step(x, 0.0, True)
        zs.append(x)
    return torch.cat(zs, dim=2)[:, :, :n_lat]


# ============================================================================ metrics
@dataclass
class FrameScores:
    """Per generated frame of one episode (length n)."""
    se: np.ndarray  # mean squared error (all pixels)
    fg_se: np.ndarray  # summed squared error over non-white pixels (either frame)
    fg_n: np.ndarray  # number of those pixel-channels
    ssim: np.ndarray
    probe_err: np.ndarray | None  # (n, n_targets) |probe(generated) - true|
    reward_err: np.ndarray | None  # |reward_generated - reward_real|
    term_ok: np.ndarray | None  # generated termination flag == real flag


def ssim_per_frame(a: np.ndarray, b: np.ndarray, block: int = 256) -> np.ndarray:
    """SSIM of each frame pair, (n, H, W, 3) uint8 -> (n,): the definition of `models.metrics.ssim`
    (11x11 Gaussian, sigma 1.5, valid windows, channels averaged) computed with a separable filter
    in float32 over a batch of frames -- ~50x faster than one float64 call per frame (tested equal)."""
    import torch.nn.functional as Fn

    size, sigma = 11, 1.5
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).float()
    gh, gw = g.view(1, 1, size, 1).expand(3, 1, size, 1), g.view(1, 1, 1, size).expand(3, 1, 1, size)

    def filt(t):  # (N, 3, H, W) -> (N, 3, H-10, W-10)
        return Fn.conv2d(Fn.conv2d(t, gh, groups=3), gw, groups=3)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = np.zeros(len(a))
    for s in range(0, len(a), block):
        x = torch.from_numpy(a[s:s + block]).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(b[s:s + block]).permute(0, 3, 1, 2).float()
        mx, my = filt(x), filt(y)
        sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
        out[s:s + block] = m.mean(dim=(1, 2, 3)).double().numpy()
    return out


def score_frames(gen: Generated, ep: RealRollout, probe=None, block: int = 128) -> FrameScores:
    real = ep.frames[ep.F:]
    n = len(real)
    se, fg_se, fg_n = np.zeros(n), np.zeros(n), np.zeros(n)
    for s in range(0, n, block):  # blocks keep float64 copies small on long rollouts
        a, b = gen.frames[s:s + block], real[s:s + block]
        d2 = (a.astype(np.float64) - b.astype(np.float64)) ** 2  # (k, H, W, 3)
        m = np.broadcast_to((nonwhite_mask(a) | nonwhite_mask(b))[..., None], d2.shape)
        se[s:s + block] = d2.mean(axis=(1, 2, 3))
        fg_se[s:s + block] = (d2 * m).sum(axis=(1, 2, 3))
        fg_n[s:s + block] = m.sum(axis=(1, 2, 3))
    ss = ssim_per_frame(gen.frames, real)
    pe = None
    if probe is not None:
        pe = np.abs(probe.predict(gen.frames) - probe.targets(ep.states[ep.F:]))
    re = te = None
    if gen.rewards is not None:
        re = np.abs(gen.rewards - ep.rewards[ep.F:])
        te = gen.terminated == ep.terminated[ep.F:]
    return FrameScores(se, fg_se, fg_n, ss, pe, re, te)


def _psnr_from_mse(mse: float) -> float:
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0 ** 2 / mse) if math.isfinite(mse) else float("nan")


def _first_within(t: int | None, H: int) -> int | None:
    return t if t is not None and t < H else None


def _return_upto(rewards: np.ndarray, first_term: int | None, H: int) -> float:
    """Episode return under gymnasium semantics within the first H frames: rewards up to and
    including the first terminal frame."""
    end = min(H, len(rewards)) if first_term is None else min(first_term + 1, H, len(rewards))
    return float(rewards[:end].sum())


def aggregate(scores: list[FrameScores], gens: list[Generated], episodes: list[RealRollout], horizons: Sequence[float],
              fps: int, target_names: Sequence[str] = ()) -> dict:
    """Per horizon h (seconds): frame metrics pooled over frames in (previous h, h] of all
    episodes still running; termination/return metrics over the first h seconds."""
    out = {}
    prev = 0
    for h in horizons:
        H = int(round(h * fps))
        sel = [(s, slice(prev, min(H, len(s.se)))) for s in scores]
        sel = [(s, sl) for s, sl in sel if sl.stop > sl.start]
        n_frames = sum(sl.stop - sl.start for _, sl in sel)
        row: dict = {"bin_seconds": [prev / fps, h], "episodes": len(sel), "frames": n_frames}
        if n_frames:
            mse = sum(float(s.se[sl].sum()) for s, sl in sel) / n_frames
            fg_n = sum(float(s.fg_n[sl].sum()) for s, sl in sel)
            fg_mse = sum(float(s.fg_se[sl].sum()) for s, sl in sel) / fg_n if fg_n else float("nan")
            row.update(psnr=_psnr_from_mse(mse), psnr_fg=_psnr_from_mse(fg_mse),
                       ssim=sum(float(s.ssim[sl].sum()) for s, sl in sel) / n_frames)
            if sel[0][0].probe_err is not None:
                pe = np.concatenate([s.probe_err[sl] for s, sl in sel])
                for j, name in enumerate(target_names):
                    row[f"{name}_err"] = float(pe[:, j].mean())
            if sel[0][0].reward_err is not None:
                row["reward_mae"] = float(np.concatenate([s.reward_err[sl] for s, sl in sel]).mean())
                row["term_frame_acc"] = float(np.concatenate([s.term_ok[sl] for s, sl in sel]).mean())
        if gens and gens[0].terminated is not None:
            # termination timing over the first h seconds (episodes that reached at least one frame)
            errs, missed, false, both_none, ret = [], 0, 0, 0, []
            for g, ep in zip(gens, episodes):
                Hi = min(H, ep.n)
                r, d = _first_within(ep.first_termination(), Hi), _first_within(g.first_termination(), Hi)
                if r is not None and d is not None:
                    errs.append(abs(d - r))
                elif r is not None:
                    missed += 1
                elif d is not None:
                    false += 1
                else:
                    both_none += 1
                ret.append(abs(_return_upto(g.rewards, g.first_termination(), Hi) - _return_upto(ep.rewards[ep.F:], ep.first_termination(), Hi)))
            n_ep = len(episodes)
            n_real = len(errs) + missed  # episodes whose real twin terminates within the horizon
            row.update(term_within_4_frames=sum(e <= 4 for e in errs) / n_real if n_real else None)
            row.update(term_timing_mae_frames=float(np.mean(errs)) if errs else None, term_both=len(errs),
                       term_missed=missed, term_false=false, term_agree=(len(errs) + both_none) / n_ep if n_ep else None,
                       return_mae=float(np.mean(ret)) if ret else None)
        out[_hkey(h)] = row
        prev = H
    return out


def _hkey(h: float) -> str:
    return f"{h:g}s"


def evaluate_methods(methods: dict[str, list[Generated]], episodes: list[RealRollout], horizons: Sequence[float], fps: int,
                     probe=None) -> tuple[dict, dict]:
    """-> ({method: {horizon: metrics}}, {method: [FrameScores per episode]})."""
    names = probe.config.target_names if probe is not None else ()
    table, per_frame = {}, {}
    for m, gens in methods.items():
        scores = [score_frames(g, ep, probe) for g, ep in zip(gens, episodes)]
        table[m] = aggregate(scores, gens, episodes, horizons, fps, names)
        per_frame[m] = scores
    if probe is not None:  # the probe on the real frames themselves: the floor of every probe error
        real = [Generated(ep.frames[ep.F:]) for ep in episodes]
        scores = [score_frames(g, ep, probe) for g, ep in zip(real, episodes)]
        table["real_frames (probe floor)"] = aggregate(scores, [], episodes, horizons, fps, names)
    return table, per_frame


def episode_summaries(episodes: list[RealRollout], gens: list[Generated] | None, fps: int) -> list[dict]:
    out = []
    for i, ep in enumerate(episodes):
        d = {"seed": ep.seed, "variant": ep.variant, "policy": ep.policy, "seconds": ep.n / fps,
             "real_first_termination_frame": ep.first_termination()}
        if gens is not None:
            d["dream_first_termination_frame"] = gens[i].first_termination()
        out.append(d)
    return out


# ============================================================================ reporting
METRIC_COLUMNS = [("psnr", "PSNR dB", "{:.2f}"), ("psnr_fg", "PSNR fg dB", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                  ("pole_angle_deg_err", "angle err deg", "{:.2f}"), ("cart_x_m_err", "cart x err m", "{:.3f}"),
                  ("reward_mae", "reward MAE", "{:.3f}"), ("term_frame_acc", "term acc", "{:.3f}"),
                  ("term_timing_mae_frames", "term timing err (frames)", "{:.1f}"),
                  ("term_within_4_frames", "term within 4 fr", "{:.2f}"), ("term_missed", "term missed", "{}"),
                  ("term_false", "term false", "{}"), ("return_mae", "return MAE", "{:.1f}")]


def _fmt(v, f: str) -> str:
    if isinstance(v, str):  # "inf" / "nan" after a JSON round trip
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f.format(v)


def markdown_table(table: dict, horizons: Sequence[float], title_col: str = "method") -> str:
    """Rows (horizon, method); columns: the metrics any method has."""
    cols = [c for c in METRIC_COLUMNS if any(c[0] in row for m in table.values() if "skipped" not in m for row in m.values())]
    head = f"| horizon | {title_col} | eps | frames | " + " | ".join(c[1] for c in cols) + " |"
    lines = [head, "|" + "---|" * (4 + len(cols))]
    for h in horizons:
        for m, rows in table.items():
            if "skipped" in rows:
                continue
            r = rows[_hkey(h)]
            lines.append(f"| {r['bin_seconds'][0]:g}-{h:g} s | {m} | {r['episodes']} | {r['frames']} | "
                         + " | ".join(_fmt(r.get(c[0]), c[2]) for c in cols) + " |")
    skipped = [f"- {m}: skipped ({rows['skipped']})" for m, rows in table.items() if "skipped" in rows]
    return "\n".join(lines + ([""] + skipped if skipped else [])) + "\n"


def json_safe(obj):
    """inf/nan -> strings so the JSON stays standard."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(obj), indent=2))
    return path


def plot_error_vs_time(per_frame: dict[str, list[FrameScores]], fps: int, path: str | Path, bin_frames: int = 25,
                       target_names: Sequence[str] = ()) -> Path:
    """PSNR (non-white pixels), SSIM and probe errors vs time since the start, binned every
    `bin_frames`, pooled over the episodes still running; one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("psnr_fg", "PSNR non-white px (dB)"), ("ssim", "SSIM")] + [(n, n.replace("_", " ") + " abs err") for n in target_names]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    axes = np.atleast_1d(axes)
    for m, scores in per_frame.items():
        n_max = max(len(s.se) for s in scores)
        ts, vals = [], {p[0]: [] for p in panels}
        for s0 in range(0, n_max, bin_frames):
            sl = slice(s0, s0 + bin_frames)
            live = [s for s in scores if len(s.se) > s0]
            fg_n = sum(s.fg_n[sl].sum() for s in live)
            ts.append((s0 + min(bin_frames, n_max - s0) / 2 + 1) / fps)
            vals["psnr_fg"].append(_psnr_from_mse(sum(s.fg_se[sl].sum() for s in live) / fg_n) if fg_n else np.nan)
            vals["ssim"].append(np.mean(np.concatenate([s.ssim[sl] for s in live])))
            for j, name in enumerate(target_names):
                vals[name].append(np.mean(np.concatenate([s.probe_err[sl, j] for s in live])) if live[0].probe_err is not None else np.nan)
        for ax, (key, label) in zip(axes, panels):
            y = np.asarray(vals[key], float)
            y[~np.isfinite(y)] = np.nan
            ax.plot(ts, y, label=m, marker="." if len(ts) < 30 else None)
            ax.set_xscale("log")
            ax.set_xlabel("time since start (s)")
            ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _upscale(frames: np.ndarray, k: int) -> np.ndarray:
    return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def strip_image(rows: dict[str, np.ndarray], times_s: Sequence[float], fps: int, path: str | Path, scale: int = 2) -> Path:
    """A grid: one row per source (each (n, H, W, 3) generated-frame aligned), one column per time."""
    import imageio.v3 as iio

    n = min(len(v) for v in rows.values())
    idx = [min(n - 1, max(0, int(round(t * fps)) - 1)) for t in times_s]
    pad = 2
    grid = []
    for frames in rows.values():
        cells = [np.pad(frames[i], ((pad, pad), (pad, pad), (0, 0)), constant_values=128) for i in idx]
        grid.append(np.concatenate(cells, axis=1))
    img = _upscale(np.concatenate(grid, axis=0), scale)
    iio.imwrite(path, img)
    (Path(path).with_suffix(".txt")).write_text("rows: " + ", ".join(rows) + "\ncolumns (s): " + ", ".join(f"{t:g}" for t in
                                                 [(i + 1) / fps for i in idx]) + "\n")
    return Path(path)


def side_by_side_video(pairs: list[tuple[np.ndarray, np.ndarray]], fps: int, path: str | Path, scale: int = 3) -> Path:
    """MP4 of (dream | real) per episode, episodes one after another with 10 grey frames between."""
    import imageio.v2 as iio2

    with iio2.get_writer(str(path), fps=fps, codec="libx264", quality=5, macro_block_size=2) as w:
        for k, (dream, real) in enumerate(pairs):
            sep = np.full((dream.shape[1], 2, 3), 128, np.uint8)
            for a, b in zip(dream, real):
                w.append_data(_upscale(np.concatenate([a, sep, b], axis=1), scale))
            if k < len(pairs) - 1:
                for _ in range(10):
                    w.append_data(np.full_like(_upscale(np.concatenate([dream[0], sep, real[0]], axis=1), scale), 128))
    return Path(path)


def resolve_probe(probe_dir: str | Path | None, world: str, out_dir: Path, steps: int = 1500, episodes: int = 32,
                  data: str | Path | None = None):
    """Load a saved probe, or train one (saved to `probe_dir`, else OUT/probe). -> (probe, its held-out eval)."""
    from causvid_env.probe import PROBE_TARGETS, load_probe, train_probe

    if get_world(world).name not in PROBE_TARGETS:
        return None, {"skipped": f"no probe targets for world {world!r}"}
    if probe_dir is not None and (Path(probe_dir) / "config.json").is_file():
        return load_probe(probe_dir)
    target = Path(probe_dir) if probe_dir is not None else out_dir / "probe"
    return train_probe(world, steps=steps, episodes=episodes, heldout_episodes=max(2, episodes // 6), data=data, out=target)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


def add_dataclass_args(parser, cls) -> None:
    """One `--flag` per field of an `Args` dataclass (cleanrl style); fields without a default
    are required. Help text: the docstring-style string literal under the field, if any."""
    import dataclasses
    import inspect
    import re

    src = inspect.getsource(cls)
    docs = dict(re.findall(r"^\s+(\w+):[^\n]*\n\s+\"\"\"(.*?)\"\"\"", src, flags=re.M | re.S))
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING
        base = str(f.type).split("|")[0].strip()
        if base == "bool":
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, action="store_true", default=bool(f.default),
                                help=docs.get(f.name, "").strip() or None)
            continue
        typ = {"int": int, "float": float}.get(base, str)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ, required=required,
                            default=None if required else f.default, help=docs.get(f.name, "").strip() or None)
