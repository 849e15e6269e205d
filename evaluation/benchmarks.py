"""Timing helpers shared by `examples/benchmark.py` and `examples/kv_cache_benchmark.py`.

Every number is a wall-clock median over repeats (after a warm-up call) on whatever device the
models live on; CPU thread count is the caller's choice (`torch.set_num_threads`).
"""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable

import numpy as np
import torch

from models.dit import DiT
from models.masks import block_causal_mask
from models.samplers import Cond, ode_sample, student_sample_chunk, write_context


def _sync() -> None:
    """Wait for queued GPU work, so that wall time measures it (a no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timings(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(max(1, repeats)):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t0)
    return ts


def median_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` calls after `warmup` untimed calls."""
    return statistics.median(timings(fn, repeats, warmup))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def random_cond(model: DiT, batch: int, latent_frames: int, seed: int = 0) -> Cond:
    """Random (but fixed) actions and a random prompt embedding: timing does not need a text model."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    n = latent_frames * cfg.frames_per_latent
    from models.actions import ActionCodec, space_from_dict
    space = space_from_dict(cfg.action_space)
    space.seed(seed)
    feats = torch.from_numpy(ActionCodec(cfg.action_space).to_features(np.stack([space.sample() for _ in range(n)]))).float()
    dev = next(model.parameters()).device
    feats = feats[None].repeat(batch, 1, 1).to(dev)
    null = torch.zeros(batch, n, dtype=torch.bool, device=dev)
    tok = torch.randn(batch, 8, cfg.text_dim, generator=g).to(dev)
    mask = torch.ones(batch, 8, dtype=torch.bool, device=dev)
    text = model.encode_text(tok, mask, torch.zeros(batch, dtype=torch.bool, device=dev), with_kv=True)
    null_text = model.encode_text(tok, mask, torch.ones(batch, dtype=torch.bool, device=dev))
    return Cond(feats, null, text, null_text)


@torch.no_grad()
def kv_cache_vs_recompute(model: DiT, context_frames: int, steps: int = 4, repeats: int = 3, batch: int = 1) -> dict:
    """Per-chunk cost at a full context of `context_frames` latent frames.

    cache: `student_sample_chunk` (the `steps` denoising passes of the new chunk attending to the
    cached keys/values + the clean pass that writes them; the env runs the same passes with the
    writing pass fused into the next chunk's first, timed by examples/benchmark.py).
    recompute: no cache; each denoising step runs the whole block-causal sequence (context + chunk)
    through the network, as a model without a KV cache must."""
    cfg = model.config
    c = cfg.latent_frames_per_chunk
    shape = (batch, cfg.latent_channels, c, cfg.latent_height, cfg.latent_width)
    g = torch.Generator().manual_seed(0)
    dev = next(model.parameters()).device
    ctx = torch.randn(batch, cfg.latent_channels, context_frames, cfg.latent_height, cfg.latent_width, generator=g).to(dev)
    cond = random_cond(model, batch, context_frames + c)
    ts = torch.linspace(0.95, 0.2, steps)
    cache = model.new_cache(batch, context_frames)
    write_context(model, cache, ctx, cond)  # fill the window; every timed chunk then slides it by one chunk
    chunk_cond = cond.frames(0, c, cfg.frames_per_latent)
    noise = torch.randn(shape, generator=g).to(dev)
    t_cache = median_time(lambda: student_sample_chunk(model, cache, noise, chunk_cond, ts, write=True), repeats)

    T = context_frames + c
    mask = block_causal_mask(T, c).to(dev)
    x = torch.cat([ctx, noise], dim=2)

    def recompute():
        for i in range(steps):
            t = torch.cat([torch.zeros(batch, context_frames), torch.full((batch, c), float(ts[i]))], 1).to(dev)
            model(x, t, cond.action_feats, cond.action_null, cond.text, frame_mask=mask)

    t_re = median_time(recompute, repeats)
    return {"context_latent_frames": context_frames, "tokens_in_context": context_frames * model.tokens_per_frame,
            "steps": steps, "batch": batch, "cache_ms_per_chunk": 1e3 * t_cache, "recompute_ms_per_chunk": 1e3 * t_re,
            "recompute_over_cache": t_re / t_cache}


@torch.no_grad()
def teacher_clip_seconds(teacher: DiT, vae, schedule, latent_frames: int, num_steps: int, guidance_text: float,
                         guidance_action: float) -> float:
    """Wall time for the bidirectional teacher to produce a whole clip from the prompt (its first
    frame is only ready when the whole clip is): guided ODE over all latent frames + VAE decode."""
    cfg = teacher.config
    cond = random_cond(teacher, 1, latent_frames)
    cond.text.kv = None
    noise = torch.randn(1, cfg.latent_channels, latent_frames, cfg.latent_height, cfg.latent_width).to(next(teacher.parameters()).device)
    _sync()
    t0 = time.perf_counter()
    z, _ = ode_sample(teacher, schedule, noise, cond, num_steps=num_steps, guidance_text=guidance_text, guidance_action=guidance_action)
    vae.decode_step(z, vae.init_stream_state(1, z.device))
    _sync()
    return time.perf_counter() - t0


def real_gym_steps_per_s(env_id: str = "CartPole-v1", steps: int = 300, render: bool = True, seed: int = 0,
                         render_every: int = 1) -> float:
    """The real gymnasium env stepping (+ rgb_array rendering of every `render_every`-th step: 4
    matches a dream that shows only the last frame of each 4-frame chunk), resetting when an
    episode ends."""
    import gymnasium as gym
    env = gym.make(env_id, render_mode="rgb_array" if render else None)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if render and (i + 1) % render_every == 0:
            env.render()
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt
