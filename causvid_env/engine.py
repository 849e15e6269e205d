"""The batched dream engine shared by `CausVidEnv` (batch 1) and `CausVidVectorEnv` (batch K).

It owns the per-env state -- the sliding-window KV cache, the VAE's streaming decode state, the
prompt, the noise generator, the last latent frame and the last chunk's pending cache write -- and
advances every env by one chunk in a single batched forward. A chunk is 4 student passes; the
first also writes the previous chunk's keys/values (fused cache writes, `sample_chunk_fused`), so
the clean pass CausVid runs after each chunk costs no pass of its own. Resetting an env is also
"one chunk": its cache rows are cleared, its pending write dropped, and the chunk is either
generated from the prompt alone (null action) or, for an image/clip reset, the encoded real latent
replaces the sample and becomes the pending write. So resets and steps of different envs share
one forward; nothing is copied per env.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from causvid_env.checkpoint import WorldModel
from causvid_env.worlds import WorldSpec
from models.actions import ActionCodec
from models.dit import TextCond
from models.io import resolve_device
from models.samplers import (Cond, PendingWrite, check_temperature, pending_write, sample_chunk_fused, student_sample_chunk,
                             write_chunk, write_pending)
from models.text import validate_prompt
from models.vae import frames_to_tensor, tensor_to_frames


def sampling_temperature(model: WorldModel, temperature: float | None) -> float:
    """The scale of the student's noise draws (the chunk's starting noise and its re-noising between
    steps; not the context noise of the cache write): `temperature` None is the checkpoint's (info
    `temperature`, else 1.0, the trained one). Below 1 the chunk's sample varies less from draw to
    draw; what that costs (a smaller response to the actions) is measured, not assumed: see the
    README's temperature table. Bad values raise a ValueError naming the argument."""
    if temperature is None:
        temperature = model.info.get("temperature", 1.0)
    return check_temperature(temperature, "temperature", "the noise the student was trained with")


def stream_settings(model: WorldModel, world: WorldSpec, window_seconds: float | None,
                    context_noise: float | None) -> tuple[float, float, int]:
    """The cache settings of a stream (the engine's and the restyler's): `window_seconds` None is
    the checkpoint's default window (`window_frames` in its info, chosen by measurement; 10 s for
    checkpoints that record none), `context_noise` None the level the checkpoint was trained to
    read its cache at (info `context_noise`, else 0). Returns (window seconds, context noise,
    window in latent frames, at least one chunk); bad values raise a ValueError naming them."""
    s = model.student.config
    if window_seconds is None:
        trained = model.info.get("window_frames")
        window_seconds = trained * s.frames_per_latent / world.fps if trained else 10.0
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, Real) or not window_seconds > 0:
        raise ValueError(f"window_seconds: must be > 0 seconds (or None for the trained window), got {window_seconds!r}")
    if context_noise is None:
        context_noise = float(model.info.get("context_noise", 0.0))
    if not 0.0 <= context_noise < 1.0:
        raise ValueError(f"context_noise: must be in [0, 1), got {context_noise}")
    window_frames = max(s.latent_frames_per_chunk, int(round(window_seconds * world.fps / s.frames_per_latent)))
    return float(window_seconds), float(context_noise), window_frames


@dataclass
class ChunkResult:
    frames: np.ndarray  # (B, F, H, W, 3) uint8 (fewer frames when the engine decodes only some)
    frame_rewards: np.ndarray  # (B, F) float32
    frame_terminated: np.ndarray  # (B, F) bool
    latency_s: float


class DreamEngine:
    def __init__(self, model: WorldModel, world: WorldSpec, num_envs: int, window_seconds: float | None = None,
                 sink_chunks: int = 0, device: str | torch.device = "cpu", text_encoder=None, context_noise: float | None = None,
                 student_dtype: torch.dtype | None = None, fused_writes: bool = True, temperature: float | None = None):
        """`window_seconds`, `context_noise`: see `stream_settings`, `temperature`: `sampling_temperature`
        (None: the checkpoint's). `student_dtype`
        torch.bfloat16 / torch.float16: the student's passes run under autocast at that precision (for
        GPUs; on a CPU without fast bf16 it is slower); the cache, the VAE and the heads stay float32.
        Its fidelity cost is measured by `examples/benchmark.py`. `fused_writes` (default True): a
        chunk's cache-writing pass runs inside the next chunk's first denoising pass (4 passes per
        chunk instead of 5, the same numbers: `models.samplers.sample_chunk_fused`); False runs it
        right after the chunk (`student_sample_chunk`), the reference the tests compare against."""
        if student_dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"student_dtype: expected None, torch.float32, torch.bfloat16 or torch.float16, got {student_dtype!r}")
        self.student_dtype = None if student_dtype == torch.float32 else student_dtype
        self.window_seconds, self.context_noise, self.window_frames = stream_settings(model, world, window_seconds, context_noise)
        self.temperature = sampling_temperature(model, temperature)
        if sink_chunks < 0:
            raise ValueError(f"sink_chunks: must be >= 0, got {sink_chunks}")
        self.model, self.world, self.B = model, world, num_envs
        self.device = resolve_device(device)
        s = model.student.config
        self.F = s.frames_per_latent  # video frames per latent frame
        self.c = s.latent_frames_per_chunk  # latent frames per chunk (one env step)
        self.fused_writes = fused_writes
        self.cache = model.student.new_cache(num_envs, self.window_frames, sink_chunks * self.c, self.device, fused_writes=fused_writes)
        self.pending: PendingWrite | None = None  # the last chunk's deferred cache write (fused_writes)
        self.vae_state = model.vae.init_stream_state(num_envs, self.device)
        self.codec = ActionCodec(s.action_space)
        self.timesteps = model.schedule.student_timesteps()
        # one noise stream per env, on the model's device (no host-to-device copy of the noise)
        self.generators = [torch.Generator(device=self.device).manual_seed(i) for i in range(num_envs)]
        self.prev_latent = torch.zeros(num_envs, s.latent_channels, 1, s.latent_height, s.latent_width, device=self.device)
        self.at_start = torch.ones(num_envs, dtype=torch.bool)
        self.prompts: list[str | None] = [None] * num_envs
        self._text: TextCond | None = None
        self._text_encoder = text_encoder
        # which frames of each latent frame to decode (None: all); an env that shows only the
        # chunk's last frame sets (F - 1,), skipping 3/4 of the per-frame VAE work
        self.decode_frames: tuple[int, ...] | None = None

    # -- prompts ---------------------------------------------------------------------------------
    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from models.text import shared_text_encoder
            self._text_encoder = shared_text_encoder("cpu")
        return self._text_encoder

    def set_prompt(self, env: int, prompt: str | None) -> None:
        if prompt is not None:
            prompt = validate_prompt(prompt)
        if self.prompts[env] != prompt:
            self.flush()  # the pending write belongs to the old prompt: run it under that prompt now
            self.prompts[env] = prompt
            self._text = None  # text keys/values are recomputed only when a prompt changes

    def text(self) -> TextCond:
        if self._text is None:
            tok, mask, is_null = self.text_encoder.encode(self.prompts)  # MiniLM runs once per distinct prompt
            with torch.no_grad():
                self._text = self.model.student.encode_text(tok.to(self.device), mask.to(self.device), is_null.to(self.device), with_kv=True)
        return self._text

    # -- inputs ----------------------------------------------------------------------------------
    def action_features(self, per_frame_actions: list[np.ndarray | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per env: validated (F*c, *shape) actions or None (null) -> features (B, F*c, A), null (B, F*c)."""
        n = self.F * self.c
        feats = np.zeros((self.B, n, self.codec.feature_dim), np.float32)
        null = np.ones((self.B, n), bool)
        for i, a in enumerate(per_frame_actions):
            if a is not None:
                feats[i] = self.codec.to_features(a, name="action")
                null[i] = False
        return torch.from_numpy(feats).to(self.device), torch.from_numpy(null).to(self.device)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """Real frames (T, H, W, 3) uint8, T a multiple of F -> latents (1, C, T/F, h, w), fresh stream."""
        vae = self.model.vae
        state = vae.init_stream_state(1, self.device)
        z, _ = vae.encode_step(frames_to_tensor(frames[None], self.device), state)
        return z

    # -- the one batched operation ----------------------------------------------------------------
    @torch.no_grad()
    def chunk(self, actions: list[np.ndarray | None], reset: np.ndarray | None = None,
              override: dict[int, torch.Tensor] | None = None) -> ChunkResult:
        """Advance every env by one chunk.

        actions[i]: (F*c, *shape) per-frame actions of env i, or None for the null action.
        reset: bool (B,) envs whose episode starts with this chunk (cache and decoder cleared).
        override: {env: latents (1, C, c, h, w)} real latents written instead of a sample."""
        t0 = time.perf_counter()
        if reset is not None and reset.any():
            mask = torch.from_numpy(np.asarray(reset, bool))
            self.cache.reset(mask)
            if self.pending is not None:  # an env starting over drops its unwritten chunk
                self.pending.envs = self.pending.envs & ~mask  # both on the host
            self.model.vae.reset_stream_state(self.vae_state, mask.to(self.device))
            self.at_start |= mask
        af, an = self.action_features(actions)
        cond = Cond(af, an, self.text())
        s = self.model.student.config
        shape = (s.latent_channels, self.c, s.latent_height, s.latent_width)
        # every draw of the chunk (the noise, the re-noising after each step but the last, the context
        # noise) in one call per env, from that env's own generator: (B, draws, C, c, h, w)
        n_draws = len(self.timesteps) + (1 if self.context_noise > 0 else 0)
        draws = torch.stack([torch.randn((n_draws, *shape), generator=g, device=self.device) for g in self.generators])
        noise = draws[:, 0] * self.temperature
        renoise = [draws[:, i] * self.temperature for i in range(1, len(self.timesteps))]
        ctx_eps = draws[:, -1] if self.context_noise > 0 else None
        student = self.model.student
        with torch.autocast(self.device.type, dtype=self.student_dtype or torch.float32, enabled=self.student_dtype is not None):
            x0 = self._sample(student, noise, cond, renoise, ctx_eps, override).float()
        x, self.vae_state = self.model.vae.decode_step(x0, self.vae_state, self.decode_frames)
        frames = tensor_to_frames(x)  # (B, F*c, H, W, 3), or (B, c*len(decode_frames), ...)
        start = self.at_start.to(self.device)[:, None, None, None, None]
        prev = torch.where(start, x0[:, :, :1], self.prev_latent)
        r, term = self.model.heads(x0, prev)
        self.prev_latent = x0[:, :, -1:].clone()
        self.at_start[:] = False
        return ChunkResult(frames, r.cpu().numpy().astype(np.float32), (term > 0).cpu().numpy(), time.perf_counter() - t0)

    def flush(self) -> None:
        """Write the pending chunk's keys/values now (before a prompt change, or before reading the
        cache directly); a no-op without fused writes or when nothing is pending."""
        if self.pending is not None and bool(self.pending.envs.any()):
            write_pending(self.model.student, self.cache, self.pending)
        self.pending = None

    def _sample(self, student, noise, cond: Cond, renoise, ctx_eps, override) -> torch.Tensor:
        """The chunk's latents (B, C, c, h, w), its keys/values written to the cache (or left
        pending, with fused writes)."""
        if self.fused_writes:
            if override and len(override) == self.B:
                self.flush()  # no pass of this chunk to carry the previous chunk's write
                x0 = torch.empty_like(noise)
            else:
                x0 = sample_chunk_fused(student, self.cache, noise, cond, self.timesteps, renoise, self.pending)
            for i, z in (override or {}).items():
                x0[i] = z[0].to(x0)
            self.pending = pending_write(x0, cond, self.context_noise, ctx_eps)
            return x0
        if override:
            if len(override) == self.B:
                # every env writes real latents (an image/clip reset): no sample is needed. The noise
                # above is still drawn, so an env's random stream never depends on its neighbours.
                x0 = torch.empty_like(noise)
            else:
                x0, _ = student_sample_chunk(student, self.cache, noise, cond, self.timesteps, renoise, write=False)
            for i, z in override.items():
                x0[i] = z[0].to(x0)
            # the cache pass writes the (possibly replaced) chunk; denoising left the slots scratch
            write_chunk(student, self.cache, x0, cond, self.context_noise, ctx_eps)
            return x0
        x0, _ = student_sample_chunk(student, self.cache, noise, cond, self.timesteps, renoise, write=True,
                                     context_noise=self.context_noise, context_eps=ctx_eps)
        return x0

    def seed(self, env: int, seed: int) -> None:
        self.generators[env].manual_seed(int(seed))

    def context_seconds(self) -> np.ndarray:
        pending = 0 if self.pending is None else self.pending.envs.long() * self.c
        return self.cache.context_frames(pending).cpu().numpy() * self.F / self.world.fps

    def memory_bytes(self) -> int:
        st = self.vae_state
        return self.cache.memory_bytes() + sum(t.numel() * t.element_size() for t in st.enc + st.dec)
