"""Streaming video-to-video: restyle a live video stream chunk by chunk (CausVid's streaming V2V).

Each incoming chunk of F real frames (cartpole: 4 frames of 64x96) is

1. encoded by the causal VAE's *streaming* encoder (its temporal feature cache carries over from
   the previous chunk, so chunk-by-chunk encoding equals encoding the whole video at once);
2. noised SDEdit-style, x_t = (1 - t) z + t eps, to the student level t nearest `strength`
   (the four student levels of the shipped schedule are about 1.0, 0.90, 0.75, 0.50);
3. denoised by the few-step causal student *from that level on* (predict x0, re-noise to the
   next level, ...), under the current prompt and the chunk's actions (or the null action),
   attending through a sliding-window KV cache to the chunks it has already *produced*;
4. written into the cache by the clean pass and decoded by the streaming VAE decoder.

So the output streams with the input at the student's speed (fewer steps the lower the
strength), the latency per chunk is bounded and the memory is flat: the cache is preallocated
for `window_seconds` of context (1 s by default, shorter than the env's 10 s: see the class
docstring) and the VAE keeps a fixed feature cache.

`strength` says how much of each input chunk is replaced by noise: at ~0.5 the layout and
motion of the input survive and the prompt mostly restyles the appearance; near 1 the input is
almost all noise and the student regenerates the chunk from the prompt and its own past.

    >>> r = StreamingRestyler(prompt="a long red pole on a black cart under low gravity", strength=0.5)
    >>> out = r.feed(chunk)                 # (4, 64, 96, 3) uint8 in -> (4, 64, 96, 3) uint8 out
    >>> out = r.feed(next_chunk, actions=1) # the real actions of the chunk, when known
    >>> r.set_prompt("a short blue pole on a black cart pushed with strong force")  # from the next chunk
    >>> r.reset()                           # a new stream (cache, VAE state and noise seed)
"""
from __future__ import annotations

import os
import time
from numbers import Real
from pathlib import Path

import numpy as np
import torch

from causvid_env.checkpoint import WorldModel, default_checkpoint_dir, load_world_model
from causvid_env.engine import stream_settings
from causvid_env.inputs import check_prompt, quiet_text_encoder
from causvid_env.worlds import WorldSpec, get_world
from models.actions import ActionCodec, as_action_sequence
from models.dit import TextCond
from models.io import resolve_device
from models.samplers import Cond, student_sample_chunk
from models.vae import frames_to_tensor, tensor_to_frames

__all__ = ["StreamingRestyler", "check_strength"]


def check_strength(strength) -> float:
    """`strength` must be a number in (0, 1]; returns it as a float (ValueError/TypeError otherwise)."""
    if isinstance(strength, bool) or not isinstance(strength, Real):
        raise TypeError(f"strength: expected a number in (0, 1], got {type(strength).__name__} {strength!r}")
    strength = float(strength)
    if not (0.0 < strength <= 1.0):  # also rejects NaN
        raise ValueError(f"strength: must be in (0, 1] (the noise level each input chunk is pushed to: ~0.5 keeps "
                         f"the input's layout and motion, 1 regenerates it from noise), got {strength}")
    return strength


class StreamingRestyler:
    """Restyle a video stream chunk by chunk under a prompt with the causal few-step student.

    Args:
        checkpoint: a world-model checkpoint directory or a loaded `WorldModel`; None loads the
            checkpoint shipped for `world`.
        prompt: the target appearance, e.g. a variant prompt of `causvid_env.worlds`; None is the
            null prompt (no text).
        strength: noise level in (0, 1]; the chunk is noised to the student timestep nearest to
            it and denoised from there (`timestep`, `steps`).
        world: world name or spec (default: the checkpoint's world, or "cartpole").
        seed: seeds the noise stream (`reset(seed)` re-seeds it).
        window_seconds: restyled video kept in the KV cache (default 1 s; None: the window the
            checkpoint was trained with, else 10 s). Short on purpose: the input already carries
            the content, the cache only has to keep the look consistent, and a long context of
            the student's own outputs lets its own dynamics drift away from the input (a second,
            ghost cart after ~2 s; see docs/V2V.md). `sink_chunks`: first chunks always kept.
        context_noise: the level the cache is written at (default: the checkpoint's
            `context_noise`, else 0), as in `DreamEngine`.
        device: torch device. `text_encoder`: a MiniLM `TextEncoder` to share (default: the
            process-wide one).

    Attributes after each `feed`: `last_latency_s` (encode + denoise + decode of the chunk),
    `chunks` (chunks since the last reset).
    """

    def __init__(self, checkpoint: str | os.PathLike | WorldModel | None = None, prompt: str | None = None,
                 strength: float = 0.5, *, world: str | WorldSpec | None = None, seed: int = 0,
                 window_seconds: float | None = 1.0, sink_chunks: int = 0, context_noise: float | None = None,
                 device: str | torch.device = "cpu", text_encoder=None):
        self.device = resolve_device(device)
        if isinstance(checkpoint, WorldModel):
            model = checkpoint.to(self.device)
        else:
            path = Path(checkpoint) if checkpoint is not None else default_checkpoint_dir(get_world(world or "cartpole").name)
            model = load_world_model(path, device=self.device, world=None if world is None else get_world(world).name)
        self.world = get_world(world if world is not None else model.world)
        if model.world is not None and model.world != self.world.name:
            raise ValueError(f"world: the checkpoint was trained for world {model.world!r}, not {self.world.name!r}")
        self.model = model
        s, v = model.student.config, model.vae.config
        self.F = s.frames_per_latent * s.latent_frames_per_chunk  # video frames per chunk
        self.c = s.latent_frames_per_chunk  # latent frames per chunk
        self.frame_shape = (v.frame_height, v.frame_width, 3)
        self._latent_shape = (1, s.latent_channels, self.c, s.latent_height, s.latent_width)

        self.window_seconds, self.context_noise, self.window_frames = stream_settings(model, self.world, window_seconds, context_noise)
        if not isinstance(sink_chunks, int) or sink_chunks < 0:
            raise ValueError(f"sink_chunks: must be an int >= 0, got {sink_chunks!r}")
        # preallocated sliding-window cache: memory is the same after 1 chunk or 10,000
        self.cache = model.student.new_cache(1, self.window_frames, sink_chunks * self.c, self.device)
        self.vae_state = model.vae.init_stream_state(1, self.device)
        self.codec = ActionCodec(s.action_space)
        self.action_space = self.codec.space
        self.timesteps = model.schedule.student_timesteps()  # highest first
        self.strength = strength
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._text_encoder = text_encoder
        self._text: TextCond | None = None
        self.prompt: str | None = None
        self.set_prompt(prompt)
        self.chunks = 0
        self.last_latency_s = float("nan")

    # -- settings --------------------------------------------------------------------------------
    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        """Takes effect from the next chunk."""
        self._strength = check_strength(value)
        self.start_step = int(torch.argmin((self.timesteps - self._strength).abs()))

    @property
    def timestep(self) -> float:
        """The student level each chunk is noised to (the one nearest `strength`)."""
        return float(self.timesteps[self.start_step])

    @property
    def steps(self) -> int:
        """Denoising steps per chunk (plus the clean pass that writes the cache)."""
        return len(self.timesteps) - self.start_step

    def set_prompt(self, prompt: str | None) -> None:
        """The target appearance from the next chunk on (None: the null prompt). Checked like the env's
        prompts: not empty, and no longer than the text encoder reads."""
        if prompt is not None:
            prompt = check_prompt(prompt, quiet_text_encoder(self), "prompt")
        if prompt != self.prompt or self._text is None:
            self.prompt = prompt
            self._text = None  # recomputed (MiniLM + cross-attention keys) only when the prompt changes

    def reset(self, seed: int | None = None) -> None:
        """Start a new stream: empty the KV cache and the VAE caches, re-seed the noise (with `seed`,
        else the seed given last), so a reset stream repeats exactly."""
        if seed is not None:
            self.seed = int(seed)
        self.generator.manual_seed(self.seed)
        self.cache.reset()
        self.vae_state = self.model.vae.init_stream_state(1, self.device)
        self.chunks = 0

    # -- inputs ----------------------------------------------------------------------------------
    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from models.text import shared_text_encoder
            self._text_encoder = shared_text_encoder("cpu")
        return self._text_encoder

    def _text_cond(self) -> TextCond:
        if self._text is None:
            if self.prompt is None:
                from models.text import pad_prompt_tokens
                tok, mask, is_null = pad_prompt_tokens([None])  # the null prompt needs no MiniLM
            else:
                tok, mask, is_null = self.text_encoder.encode([self.prompt])
            with torch.no_grad():
                self._text = self.model.student.encode_text(tok.to(self.device), mask.to(self.device), is_null.to(self.device), with_kv=True)
        return self._text

    def _check_frames(self, frames, name: str, clip: bool) -> np.ndarray:
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().numpy()
        if not isinstance(frames, np.ndarray):
            raise TypeError(f"{name}: expected a numpy uint8 array, got {type(frames).__name__}")
        if frames.dtype != np.uint8:
            raise TypeError(f"{name}: expected dtype uint8 (0..255), got {frames.dtype}; "
                            "convert with (x * 255).round().astype(np.uint8) if it is in [0, 1]")
        H, W, _ = self.frame_shape
        if clip:
            if frames.ndim != 4 or frames.shape[1:] != self.frame_shape or frames.shape[0] == 0 or frames.shape[0] % self.F:
                raise ValueError(f"{name}: expected a clip (T, {H}, {W}, 3) with T a positive multiple of {self.F} frames, "
                                 f"got shape {frames.shape}")
        elif frames.shape != (self.F, *self.frame_shape):
            raise ValueError(f"{name}: expected one chunk of {self.F} frames, shape ({self.F}, {H}, {W}, 3), got shape "
                             f"{frames.shape}; resize frames to {H}x{W} and feed {self.F} at a time")
        return frames

    def _cond(self, actions, name: str = "actions") -> Cond:
        """Per-frame actions of one chunk (or one action held for it; None: the null action)."""
        n = self.F
        if actions is None:
            feats, null = self.codec.null_features(n), np.ones(n, bool)
        else:
            feats, null = self.codec.to_features(as_action_sequence(self.action_space, actions, n), name=name), np.zeros(n, bool)
        return Cond(torch.from_numpy(feats)[None].to(self.device), torch.from_numpy(null)[None].to(self.device), self._text_cond())

    # -- the restyle step ------------------------------------------------------------------------
    def _restyle_latents(self, z: torch.Tensor, cond: Cond) -> torch.Tensor:
        """Real latents of one chunk (1, C, c, h, w) -> restyled latents, written into the cache.

        The noise of a chunk is drawn in a fixed order from the stream's generator (start noise,
        one re-noise per remaining step, the context noise if any), so equal inputs and seeds give
        equal outputs however the chunks are batched."""
        g, shape = self.generator, self._latent_shape
        eps = torch.randn(shape, generator=g).to(self.device)
        ts = self.timesteps[self.start_step:]
        renoise = [torch.randn(shape, generator=g).to(self.device) for _ in range(len(ts) - 1)]
        ctx_eps = torch.randn(shape, generator=g).to(self.device) if self.context_noise > 0 else None
        t = float(ts[0])
        x_t = (1 - t) * z + t * eps  # SDEdit: the input pushed to the student's level t
        # the student sampler runs from whatever it is given at ts[0]: pass the noised input and
        # the levels from t on; it ends with the clean pass that writes the chunk to the cache
        x0, _ = student_sample_chunk(self.model.student, self.cache, x_t, cond, ts, renoise, write=True,
                                     context_noise=self.context_noise, context_eps=ctx_eps)
        return x0

    @torch.no_grad()
    def feed(self, frames: np.ndarray, actions=None) -> np.ndarray:
        """Restyle one chunk: frames (F, H, W, 3) uint8 -> restyled frames (F, H, W, 3) uint8.

        actions: the chunk's real actions (one action held for the chunk, or one per frame);
        None uses the null action."""
        t0 = time.perf_counter()
        frames = self._check_frames(frames, "frames", clip=False)
        cond = self._cond(actions)
        vae = self.model.vae
        z, self.vae_state = vae.encode_step(frames_to_tensor(frames[None], self.device), self.vae_state)  # (1, C, c, h, w)
        x0 = self._restyle_latents(z, cond)
        x, self.vae_state = vae.decode_step(x0, self.vae_state)  # (1, 3, F, H, W)
        self.chunks += 1
        out = tensor_to_frames(x)[0]
        self.last_latency_s = time.perf_counter() - t0
        return out

    def feed_episode(self, frames: np.ndarray, actions: np.ndarray, latencies: list[float] | None = None) -> np.ndarray:
        """Stream a recorded episode (T, H, W, 3), T a multiple of F, as a live feed, chunk by chunk:
        its first chunk (the still start chunk) with no action, each later one with its real
        per-frame `actions`. `latencies` collects each later chunk's `last_latency_s`."""
        out = []
        for k in range(len(frames) // self.F):
            sl = slice(k * self.F, (k + 1) * self.F)
            out.append(self.feed(frames[sl], actions=None if k == 0 else actions[sl]))
            if k > 0 and latencies is not None:
                latencies.append(self.last_latency_s)
        return np.concatenate(out)

    @torch.no_grad()
    def restyle_clip(self, frames: np.ndarray, actions=None) -> np.ndarray:
        """Restyle a whole recorded clip (T, H, W, 3) uint8, T a multiple of F, in one call: the VAE
        encodes all T frames in one pass and decodes all latents in one pass; the student still goes
        chunk by chunk (each chunk attends to the ones before it). Continues the current stream, so
        on a fresh (or reset) restyler it equals feeding the clip's chunks one by one.

        actions: None (null action) or one action per frame, shape (T, *action_shape)."""
        frames = self._check_frames(frames, "frames", clip=True)
        n = frames.shape[0] // self.F
        if actions is not None:
            actions = np.asarray(actions)
            if actions.shape[:1] != (frames.shape[0],):
                raise ValueError(f"actions: expected one action per frame, {frames.shape[0]} in all, got shape {actions.shape}")
        vae = self.model.vae
        z, self.vae_state = vae.encode_step(frames_to_tensor(frames[None], self.device), self.vae_state)  # (1, C, n*c, h, w)
        x0 = []
        for k in range(n):
            a = None if actions is None else actions[k * self.F:(k + 1) * self.F]
            x0.append(self._restyle_latents(z[:, :, k * self.c:(k + 1) * self.c], self._cond(a)))
        x, self.vae_state = vae.decode_step(torch.cat(x0, 2), self.vae_state)
        self.chunks += n
        return tensor_to_frames(x)[0]

    # -- bookkeeping -----------------------------------------------------------------------------
    def context_seconds(self) -> float:
        """Seconds of restyled video the next chunk attends to (at most `window_seconds`)."""
        return float(self.cache.context_frames()[0]) * self.model.student.config.frames_per_latent / self.world.fps

    def memory_bytes(self) -> int:
        """KV cache + VAE feature caches; constant over the stream."""
        st = self.vae_state
        return self.cache.memory_bytes() + sum(t.numel() * t.element_size() for t in st.enc + st.dec)
