"""Turning dataset clips into model inputs: latents, action features, prompts (with CFG dropout)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.actions import ActionCodec
from models.dit import DiT, TextCond
from models.samplers import Cond
from models.text import pad_prompt_tokens


class PromptBank:
    """MiniLM embeddings of a fixed prompt list, computed once (training only sees the world's
    variant prompts). Saved with the stage so later stages need not reload the text model."""

    def __init__(self, prompts: list[str], tokens: list[torch.Tensor] | None = None, masks: list[torch.Tensor] | None = None):
        self.prompts = list(prompts)
        if tokens is None:
            from models.text import TextEncoder
            enc = TextEncoder()
            pairs = [enc.encode_one(p) for p in self.prompts]
            tokens, masks = [p[0] for p in pairs], [p[1] for p in pairs]
        self.tokens, self.masks = tokens, masks
        self.index = {p: i for i, p in enumerate(self.prompts)}

    def state(self) -> dict:
        return {"prompts": self.prompts, "tokens": self.tokens, "masks": self.masks}

    @classmethod
    def from_state(cls, s: dict) -> "PromptBank":
        return cls(s["prompts"], s["tokens"], s["masks"])

    def batch(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> tokens (B, L, 384), mask (B, L), is_null (B,); None = the null prompt."""
        return pad_prompt_tokens([None if p is None else (self.tokens[self.index[p]], self.masks[self.index[p]]) for p in prompts])


def random_chunk_actions(codec: ActionCodec, n_chunks: int, frames_per_chunk: int, rng: np.random.Generator,
                         p_keep: float = 0.5) -> np.ndarray:
    """Action features (n_chunks * frames_per_chunk, A) of a random script that knows nothing of the
    state: each chunk keeps the previous chunk's action with probability `p_keep`, else draws a
    fresh one from the action space (held for the chunk's frames, as the env holds it)."""
    if not 0.0 <= p_keep <= 1.0:
        raise ValueError(f"p_keep: expected a probability in [0, 1], got {p_keep}")
    codec.space.seed(int(rng.integers(2**31 - 1)))
    acts, a = [], None
    for c in range(n_chunks):
        if a is None or rng.random() >= p_keep:
            a = codec.space.sample()
        acts.append(a)
    feats = codec.to_features(np.asarray(acts))
    return np.repeat(feats, frames_per_chunk, axis=0)


def with_random_actions(batch: "LatentBatch", rows: np.ndarray, start_frame: int, codec: ActionCodec, frames_per_chunk: int,
                        rng: np.random.Generator, p_keep: float = 0.5) -> "LatentBatch":
    """The batch with the actions of `rows` (bool, (B,)) from video frame `start_frame` on replaced by
    `random_chunk_actions` (no longer the actions that made the clip's real future)."""
    feats, null = batch.action_feats.clone(), batch.action_null.clone()
    n = feats.shape[1] - start_frame
    if n % frames_per_chunk:
        raise ValueError(f"start_frame: {start_frame} leaves {n} frames, not whole chunks of {frames_per_chunk}")
    for i in np.flatnonzero(rows):
        f = random_chunk_actions(codec, n // frames_per_chunk, frames_per_chunk, rng, p_keep)
        feats[i, start_frame:] = torch.from_numpy(f).to(feats.device)
        null[i, start_frame:] = False
    return LatentBatch(batch.latents, feats, null, batch.prompts, batch.rewards, batch.terminated, batch.states)


def other_chunk_actions(codec: ActionCodec, feats: np.ndarray, frames_per_chunk: int, rng: np.random.Generator) -> np.ndarray:
    """For a script `feats` (n_chunks * frames_per_chunk, A) held per chunk, a script of the same
    shape whose every chunk holds a different action from the space (the other side of a
    left/right contrast)."""
    codec.space.seed(int(rng.integers(2**31 - 1)))
    out = feats.copy()
    for c in range(0, len(feats), frames_per_chunk):
        for _ in range(100):
            f = codec.to_features(np.asarray([codec.space.sample()]))[0]
            if not np.allclose(f, feats[c]):
                break
        else:
            raise ValueError(f"action space {codec.space}: no action differs from the chunk's, so no contrast can be drawn")
        out[c:c + frames_per_chunk] = f
    return out


def contrast_pairs(batch: "LatentBatch", start_frame: int, codec: ActionCodec, frames_per_chunk: int, rng: np.random.Generator,
                   p_keep: float = 0.5) -> "LatentBatch":
    """A batch of 2B rows from B clips: row i (i < B) is clip i with a random script from video
    frame `start_frame` on (`random_chunk_actions`), row B + i the same clip with a different action
    in every one of those chunks (`other_chunk_actions`). Context (the frames before) and prompt
    are shared, so what differs between the two rows is the action alone. Rewards, terminations and
    simulator states are the clip's own, not those of the new scripts."""
    n = batch.action_feats.shape[1] - start_frame
    if n <= 0 or n % frames_per_chunk:
        raise ValueError(f"start_frame: {start_frame} leaves {n} frames, not one or more whole chunks of {frames_per_chunk}")
    a_feats, b_feats = batch.action_feats.clone(), batch.action_feats.clone()
    a_null, b_null = batch.action_null.clone(), batch.action_null.clone()
    for i in range(a_feats.shape[0]):
        f = random_chunk_actions(codec, n // frames_per_chunk, frames_per_chunk, rng, p_keep)
        g = other_chunk_actions(codec, f, frames_per_chunk, rng)
        a_feats[i, start_frame:], b_feats[i, start_frame:] = torch.from_numpy(f), torch.from_numpy(g)
        a_null[i, start_frame:] = b_null[i, start_frame:] = False
    two = lambda x: None if x is None else torch.cat([x, x])
    return LatentBatch(two(batch.latents), torch.cat([a_feats, b_feats]), torch.cat([a_null, b_null]), batch.prompts * 2,
                       two(batch.rewards), two(batch.terminated), two(batch.states))


def draw_context_noise(rng: np.random.Generator, max_level: float, p: float) -> float:
    """Context-noise augmentation: with probability `p` a level uniform in [0, max_level] at which
    the context (the cache) is noised for this step, else 0 (never drawn when max_level is 0)."""
    return float(rng.uniform(0, max_level)) if (max_level > 0 and rng.random() < p) else 0.0


@dataclass
class LatentBatch:
    latents: torch.Tensor  # (B, C, T, h, w) clean latents
    action_feats: torch.Tensor  # (B, T*F, A)
    action_null: torch.Tensor  # (B, T*F) bool, True = no action
    prompts: list  # (B,) str or None (dropped for guidance)
    rewards: torch.Tensor  # (B, T*F)
    terminated: torch.Tensor  # (B, T*F) bool
    states: torch.Tensor | None = None  # (B, T*F, S) simulator states, where every clip has them

    def cond(self, model: DiT, bank: PromptBank, with_null_text: bool = False) -> Cond:
        """Conditioning for `model`, on the model's device (prompt tokens are moved there)."""
        dev = next(model.parameters()).device
        tok, mask, is_null = bank.batch(self.prompts)
        text = model.encode_text(tok.to(dev), mask.to(dev), is_null.to(dev))
        null_text = None
        if with_null_text:
            tok0, mask0, null0 = bank.batch([None] * len(self.prompts))
            null_text = model.encode_text(tok0.to(dev), mask0.to(dev), null0.to(dev))
        return Cond(self.action_feats.to(dev), self.action_null.to(dev), text, null_text)

    def to(self, device) -> "LatentBatch":
        """The tensors on `device` (the accelerator's), prompts unchanged."""
        return LatentBatch(self.latents.to(device), self.action_feats.to(device), self.action_null.to(device), self.prompts,
                           self.rewards.to(device), self.terminated.to(device),
                           None if self.states is None else self.states.to(device))

    def window(self, frames: tuple[int, int]) -> "LatentBatch":
        """The sub-clip of video frames [a, b) (whole latent frames): latents, actions, rewards."""
        a, b = frames
        F = self.action_feats.shape[1] // self.latents.shape[2]
        if a % F or b % F:
            raise ValueError(f"frames: {frames} must be multiples of the {F} video frames per latent frame")
        return LatentBatch(self.latents[:, :, a // F:b // F], self.action_feats[:, a:b], self.action_null[:, a:b], self.prompts,
                           self.rewards[:, a:b], self.terminated[:, a:b], None if self.states is None else self.states[:, a:b])


def make_batch(clips: list[dict], codec: ActionCodec, rng: np.random.Generator, p_drop_text: float = 0.0,
               p_drop_action: float = 0.0, keep_from: int | None = None) -> LatentBatch:
    """Stack clips from `distill.dataset.LatentClipDataset`; drop prompts / whole action sequences
    with the given probabilities (classifier-free guidance training). Clips from index `keep_from`
    on keep both (the teacher's left/right pairs); their drops are still drawn, so the RNG stream
    does not depend on `keep_from`."""
    lat = torch.from_numpy(np.stack([c["latents"] for c in clips])).float().permute(0, 2, 1, 3, 4)  # (B, T, C, h, w) -> (B, C, T, h, w)
    feats, nulls, prompts = [], [], []
    for i, c in enumerate(clips):
        keep = keep_from is not None and i >= keep_from
        a = np.asarray(c["actions"])
        m = np.asarray(c["action_mask"], bool)
        f = np.zeros((len(m), codec.feature_dim), np.float32)
        if m.any():
            f[m] = codec.to_features(a[m])
        null = ~m
        if rng.random() < p_drop_action and not keep:
            null = np.ones_like(null)
        feats.append(f)
        nulls.append(null)
        prompts.append(None if rng.random() < p_drop_text and not keep else c["prompt"])
    return LatentBatch(
        latents=lat,
        action_feats=torch.from_numpy(np.stack(feats)),
        action_null=torch.from_numpy(np.stack(nulls)),
        prompts=prompts,
        rewards=torch.from_numpy(np.stack([np.asarray(c["rewards"], np.float32) for c in clips])),
        terminated=torch.from_numpy(np.stack([np.asarray(c["terminated"], bool) for c in clips])),
        states=(torch.from_numpy(np.stack([np.asarray(c["states"], np.float32) for c in clips]))
                if all("states" in c for c in clips) else None),
    )


class ClipSampler:
    """Random fixed-length latent clips from a `distill.dataset.LatentCache` (a subset of its
    episodes), as lists of dicts. `from_start=True` draws clips that begin at an episode start
    (the still chunk), which is what generating from a prompt alone must reproduce."""

    def __init__(self, cache, episodes: list[int] | None = None):
        self.cache = cache
        self.episodes = list(range(len(cache))) if episodes is None else list(episodes)
        self.F = cache.frames_per_latent
        self.lengths = np.array([len(cache.latents[e]) for e in self.episodes])

    def sample(self, batch_size: int, num_latent: int, rng: np.random.Generator, from_start: bool = False) -> list[dict]:
        ok = np.flatnonzero(self.lengths >= num_latent)
        if len(ok) == 0:
            raise ValueError(f"num_latent={num_latent} is longer than every episode")
        w = (self.lengths[ok] - num_latent + 1).astype(np.float64)
        picks = rng.choice(ok, size=batch_size, p=w / w.sum())
        out = []
        for j in picks:
            e = self.episodes[int(j)]
            s = 0 if from_start else int(rng.integers(0, self.lengths[j] - num_latent + 1))
            fs = slice(s * self.F, (s + num_latent) * self.F)
            out.append({"latents": self.cache.latents[e][s:s + num_latent],
                        **{k: v[fs] for k, v in self.cache.arrays[e].items()},
                        **self.cache.strings[e], "episode": e, "start": s})
        return out
