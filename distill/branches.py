"""Branching episodes: the same real state continued under different actions, so that the action
is independent of the state (issue: "a world model that obeys its actions").

A collected episode (the *trunk*) is cut at a chunk boundary ``b`` (in latent frames); the
simulator is restored to the trunk's state there and continued three ways for ``cfg.chunks``
chunks: ``left`` (the world's first key held for ``h`` chunks), ``right`` (the second key held for
the same ``h`` chunks) and ``random`` (a fresh random action every chunk). ``left`` and ``right``
then share one random tail of actions, so the pair differs *only* in the held push: the
difference of their futures is the effect of the action, which the teacher's paired loss
(:func:`distill.train_teacher.pair_difference_loss`) learns directly.

Latents of a branch are encoded by continuing the trunk's causal VAE stream from ``b`` (the
encoder state after the trunk's first ``b`` latent frames is reused), so the context latents and
the branch latents are exactly what one uninterrupted episode would give.

    groups = generate_branches(spec, episodes, trunk_ids, BranchConfig(), seed=0)   # real simulator
    bank = encode_branches(groups, episodes, vae)                                   # BranchCache
    bank.save("runs/x/branches.safetensors")
    sampler = BranchSampler(BranchCache.load(...), latent_cache)                    # pairs of clips
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from causvid_env.policies import action_dtype, random_action
from causvid_env.rendering import Simulator
from causvid_env.worlds import WorldSpec
from distill.dataset import PER_FRAME, EpisodeDataset, LatentCache
from models.vae import frames_to_tensor

__all__ = ["BranchConfig", "KINDS", "generate_branches", "encode_branches", "BranchCache", "BranchSampler",
           "action_state_correlation"]

KINDS = ("left", "right", "random")
FORMAT = "causvid-branches/1"


@dataclass
class BranchConfig:
    points_per_episode: int = 6  # branch points drawn per trunk episode
    chunks: int = 7  # chunks (latent frames) simulated per branch: covers an 8-latent clip after 1 context frame
    min_hold: int = 2  # the pair's push is held for h ~ U{min_hold..max_hold} chunks, then a shared random tail
    max_hold: int = 7
    p_start: float = 0.25  # fraction of branch points at the still chunk (b = 1): pushes from an image reset
    min_context: int = 4  # other branch points leave at least this many latent frames of trunk before b
    p_max_context: float = 0.0  # training: fraction of branch clips given the longest context they allow (a moving 16-frame clip)


def _branch_points(n_latent: int, cfg: BranchConfig, rng: np.random.Generator) -> list[int]:
    """Distinct chunk boundaries b (latent index of the first branch frame) in a trunk of n_latent."""
    hi = n_latent - 1  # b <= n_latent - 1: the state before b exists and the trunk went on (not yet at its run-on limit)
    out = set()
    for _ in range(cfg.points_per_episode):
        if rng.random() < cfg.p_start or hi < cfg.min_context:
            out.add(1)
        else:
            out.add(int(rng.integers(cfg.min_context, hi + 1)))
    return sorted(b for b in out if 1 <= b <= hi)


def _play(sim: Simulator, spec: WorldSpec, actions: list) -> dict[str, np.ndarray]:
    """Step `sim` with one action per chunk, run on past termination; per-frame arrays."""
    F = spec.frames_per_chunk
    dtype = action_dtype(sim.action_space)
    shape = sim.action_space.shape or ()
    out = {k: [] for k in ("frames", "states", "actions", "rewards", "terminated")}
    for a in actions:
        a = np.asarray(a, dtype=dtype).reshape(shape)
        for _ in range(F):
            frame, r, t, state = sim.step(a, run_on=True)
            for k, v in (("frames", frame), ("states", state), ("actions", a), ("rewards", r), ("terminated", t)):
                out[k].append(v)
    n = len(out["frames"])
    return {"frames": np.stack(out["frames"]).astype(np.uint8), "states": np.stack(out["states"]).astype(np.float32),
            "actions": np.stack(out["actions"]).astype(dtype), "rewards": np.array(out["rewards"], np.float32),
            "terminated": np.array(out["terminated"], bool), "action_mask": np.ones(n, bool),
            "truncated": np.zeros(n, bool)}


def generate_branches(spec: WorldSpec, episodes: EpisodeDataset, trunk_ids: list[int], cfg: BranchConfig,
                      seed: int = 0, progress: bool = False) -> list[dict[str, Any]]:
    """For each trunk in `trunk_ids`, branch points and their three continuations from the real simulator.

    Returns groups: {"trunk": episode index, "point": b, "hold": h, "branches": {kind: per-frame arrays}}.
    A pure function of (seed, trunk index): growing `trunk_ids` keeps the earlier groups."""
    keys = list(spec.keymap.values())
    if len(keys) < 2:
        raise ValueError(f"world {spec.name!r}: branching needs two keys in its keymap, has {spec.keymap}")
    F = spec.frames_per_chunk
    groups = []
    sims: dict[str, Simulator] = {}
    for e in tqdm(trunk_ids, desc="branches", unit="ep", disable=not progress):
        ep = episodes[e]
        rng = np.random.default_rng([seed, 7919, int(e)])
        if ep.variant not in sims:
            sims[ep.variant] = Simulator(spec, ep.variant)
            sims[ep.variant].reset(seed=0)  # once: the env refuses to step before a reset; states are restored below
        sim = sims[ep.variant]
        for b in _branch_points(len(ep) // F, cfg, rng):
            state = ep.states[b * F - 1]
            h = int(rng.integers(cfg.min_hold, cfg.max_hold + 1))
            tail = [random_action(sim.action_space, rng) for _ in range(cfg.chunks - h)]
            plans = {"left": [keys[0]] * h + tail, "right": [keys[1]] * h + tail,
                     "random": [random_action(sim.action_space, rng) for _ in range(cfg.chunks)]}
            branches = {}
            for kind in KINDS:
                sim.set_state(state)
                branches[kind] = _play(sim, spec, plans[kind])
            groups.append({"trunk": int(e), "point": int(b), "hold": h, "branches": branches})
    for s in sims.values():
        s.close()
    return groups


@torch.no_grad()
def encode_branches(groups: list[dict[str, Any]], episodes: EpisodeDataset, vae, progress: bool = False) -> "BranchCache":
    """Latents of every branch, continuing each trunk's causal VAE stream at the branch point."""

    F = episodes.frames_per_chunk
    latents, arrays, meta = [], [], []
    by_trunk: dict[int, list[dict]] = {}
    for g in groups:
        by_trunk.setdefault(g["trunk"], []).append(g)
    for trunk, gs in tqdm(sorted(by_trunk.items()), desc="encode branches", unit="ep", disable=not progress):
        frames = episodes[trunk].frames
        state, done = vae.init_stream_state(1), 0
        for g in sorted(gs, key=lambda g: g["point"]):
            b = g["point"]
            if b > done:  # advance the trunk's stream to the branch point
                _, state = vae.encode_step(frames_to_tensor(frames[None, done * F:b * F]), state)
                done = b
            for kind in KINDS:
                br = g["branches"][kind]
                z, _ = vae.encode_step(frames_to_tensor(br["frames"][None]), state)  # the trunk's state is not advanced
                latents.append(z[0].permute(1, 0, 2, 3).numpy().astype(np.float32))  # (C, T', h, w) -> (T', C, h, w)
                arrays.append({k: br[k] for k in PER_FRAME})
                meta.append([g["trunk"], b, g["hold"], KINDS.index(kind)])
    return BranchCache(latents, arrays, np.asarray(meta, np.int64).reshape(-1, 4), F)


@dataclass
class BranchCache:
    """Branch latents (chunks, C, h, w) and per-frame arrays; `meta` rows (trunk, point, hold, kind index),
    three consecutive rows (left, right, random) per group."""
    latents: list[np.ndarray]
    arrays: list[dict[str, np.ndarray]]
    meta: np.ndarray
    frames_per_latent: int

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def num_groups(self) -> int:
        return len(self.latents) // len(KINDS)

    def save(self, path: str | os.PathLike) -> None:
        """Reuses the latent cache's file layout (one safetensors file) with the group table in its metadata."""
        strings = [{"variant": "", "prompt": "", "policy": f"branch_{KINDS[int(m[3])]}"} for m in self.meta]
        LatentCache(self.latents, self.arrays, strings, self.frames_per_latent,
                    {"format": FORMAT, "meta": self.meta.tolist()}).save(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BranchCache":
        c = LatentCache.load(path)
        if c.meta.get("format") != FORMAT:
            raise ValueError(f"path {os.fspath(path)!r} is not a branch cache (build it with distill.branches.encode_branches)")
        return cls(c.latents, c.arrays, np.asarray(c.meta["meta"], np.int64).reshape(-1, 4), c.frames_per_latent)


class BranchSampler:
    """Clips that run from a trunk's context into a branch: `pairs` gives (left clips, right clips) with the
    same context of k latent frames, `sample` single clips of any kind (the random branches add
    state-independent actions to the ordinary stream). Clips are the dicts of `distill.batches.ClipSampler`."""

    def __init__(self, branches: BranchCache, trunks: LatentCache, max_context: int = 4, p_max_context: float = 0.0):
        self.b, self.trunks, self.max_context, self.p_max_context = branches, trunks, max_context, p_max_context
        self.F = trunks.frames_per_latent
        self.groups = np.arange(branches.num_groups)

    def _clip(self, row: int, k: int, num_latent: int) -> dict[str, Any]:
        trunk, b = int(self.b.meta[row, 0]), int(self.b.meta[row, 1])
        n = num_latent - k
        if n > len(self.b.latents[row]):
            raise ValueError(f"num_latent={num_latent} with {k} context frames is longer than the {len(self.b.latents[row])}-chunk branches")
        F = self.F
        ctx = slice((b - k) * F, b * F)
        tr = self.trunks.arrays[trunk]
        return {"latents": np.concatenate([self.trunks.latents[trunk][b - k:b], self.b.latents[row][:n]]),
                **{key: np.concatenate([tr[key][ctx], self.b.arrays[row][key][:n * F]]) for key in PER_FRAME},
                **self.trunks.strings[trunk], "episode": trunk, "start": b - k, "branch": KINDS[int(self.b.meta[row, 3])]}

    def _context(self, g: int, rng: np.random.Generator, num_latent: int) -> int:
        """k in [1, min(max_context, b, num_latent - 1)]: at least one trunk frame and one branch frame."""
        b = int(self.b.meta[3 * g, 1])
        hi = max(1, min(self.max_context, b, num_latent - 1))
        if self.p_max_context > 0 and rng.random() < self.p_max_context:
            return hi
        return int(rng.integers(1, hi + 1))

    def pairs(self, num_pairs: int, num_latent: int, rng: np.random.Generator) -> tuple[list[dict], list[dict], list[int]]:
        """-> (left clips, right clips, context lengths k): clip i of both lists shares its first k_i latent frames."""
        left, right, ks = [], [], []
        for g in rng.choice(self.groups, size=num_pairs):
            k = self._context(int(g), rng, num_latent)
            left.append(self._clip(3 * int(g), k, num_latent))
            right.append(self._clip(3 * int(g) + 1, k, num_latent))
            ks.append(k)
        return left, right, ks

    def pairs_at_context(self, num_pairs: int, k: int, num_latent: int, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
        """-> (left clips, right clips), every one with exactly `k` context latent frames (drawn from the
        branch points with at least k trunk frames before them): one batch, one context length."""
        if not 1 <= k < num_latent:
            raise ValueError(f"k: expected 1 <= k < num_latent={num_latent}, got {k}")
        ok = self.groups[self.b.meta[3 * self.groups, 1] >= k]
        if not len(ok):
            raise ValueError(f"k={k}: no branch point has {k} trunk latent frames before it; use a shorter context")
        gs = rng.choice(ok, size=num_pairs)
        return [self._clip(3 * int(g), k, num_latent) for g in gs], [self._clip(3 * int(g) + 1, k, num_latent) for g in gs]

    def sample(self, batch_size: int, num_latent: int, rng: np.random.Generator) -> tuple[list[dict], list[int]]:
        """-> (clips of random kinds, context lengths k)."""
        out, ks = [], []
        for g in rng.choice(self.groups, size=batch_size):
            k = self._context(int(g), rng, num_latent)
            out.append(self._clip(3 * int(g) + int(rng.integers(len(KINDS))), k, num_latent))
            ks.append(k)
        return out, ks


def action_state_correlation(clips: list[dict], F: int) -> dict[str, float]:
    """Pearson correlation between each chunk's action (CartPole: 0 = left, 1 = right) and the pole's
    lean and angular velocity when it was chosen (the state of the frame before the chunk), over
    the action-taking chunks of `clips` (dicts with per-frame `actions`, `action_mask`, `states`).
    Near zero: the action says nothing about the state, so a model must learn its effect."""
    acts, states = [], []
    for c in clips:
        m = np.asarray(c["action_mask"], bool)
        for f in range(F, len(m), F):  # chunk starts with a frame before them in the clip
            if m[f]:
                acts.append(float(np.asarray(c["actions"][f]).reshape(-1)[0]))
                states.append(np.asarray(c["states"][f - 1], np.float64))
    if len(acts) < 2:
        return {"pole_angle": 0.0, "pole_velocity": 0.0, "decisions": len(acts)}
    a, s = np.asarray(acts), np.stack(states)

    def corr(x, y):
        return 0.0 if x.std() == 0 or y.std() == 0 else float(np.corrcoef(x, y)[0, 1])

    return {"pole_angle": corr(a, s[:, 2]), "pole_velocity": corr(a, s[:, 3]), "decisions": int(len(a))}
