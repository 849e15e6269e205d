"""Samplers, kept apart from the network: the teacher's many-step ODE sampler with classifier-free
guidance on text and on actions, and the few-step student sampler that streams chunk by chunk
with the KV cache (4 steps of predict-x0-then-renoise, then the clean pass that writes the cache;
`sample_chunk_fused` runs that clean pass inside the next chunk's first step instead).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Real

import torch

from models.dit import ChunkPlan, DiT, PassModulation, TextCond
from models.kv_cache import KVCache
from models.schedule import FlowSchedule


@dataclass
class Cond:
    """Everything a latent clip is conditioned on. action_feats (B, T*F, A), action_null (B, T*F)
    bool, text and the null prompt's TextCond (the latter only needed for guidance)."""
    action_feats: torch.Tensor
    action_null: torch.Tensor
    text: TextCond
    null_text: TextCond | None = None

    def frames(self, start: int, stop: int, frames_per_latent: int) -> "Cond":
        a, b = start * frames_per_latent, stop * frames_per_latent
        return Cond(self.action_feats[:, a:b], self.action_null[:, a:b], self.text, self.null_text)


def _cat_text(texts: list[TextCond]) -> TextCond:
    L = max(t.tokens.shape[1] for t in texts)

    def pad(x, fill):
        if x.shape[1] == L:
            return x
        shape = list(x.shape)
        shape[1] = L - x.shape[1]
        return torch.cat([x, torch.full(shape, fill, dtype=x.dtype, device=x.device)], 1)

    return TextCond(torch.cat([pad(t.tokens, 0) for t in texts]), torch.cat([pad(t.mask, False) for t in texts]),
                    torch.cat([t.pooled for t in texts]))


def guided_velocity(model: DiT, x, t, cond: Cond, guidance_text: float = 1.0, guidance_action: float = 1.0, **fw) -> torch.Tensor:
    """Compositional CFG: v = v(0,0) + g_text (v(p,0) - v(0,0)) + g_action (v(p,a) - v(p,0)).
    Branches whose scale is 1 are skipped; the rest run as one batched forward."""
    B = x.shape[0]
    n = guidance_branch_count(guidance_text, guidance_action)
    if n == 3 and cond.null_text is None:
        raise ValueError("guidance_text != 1 needs cond.null_text (the null prompt)")
    null_a = torch.ones_like(cond.action_null)
    branches = [(cond.text, cond.action_null), (cond.text, null_a), (cond.null_text, null_a)][:n]  # (p, a), (p, 0), (0, 0)
    xx = x.repeat(n, 1, 1, 1, 1)
    tt = t.repeat(n, 1)
    af = cond.action_feats.repeat(n, 1, 1)
    an = torch.cat([b[1] for b in branches])
    text = _cat_text([b[0] for b in branches]) if n > 1 else cond.text
    fw = dict(fw)
    if fw.get("frame_pos") is not None and fw["frame_pos"].ndim == 2:
        fw["frame_pos"] = fw["frame_pos"].repeat(n, 1)
    if fw.get("x_clean") is not None:
        fw["x_clean"] = fw["x_clean"].repeat(n, 1, 1, 1, 1)
    v = model(xx, tt, af, an, text, **fw).split(B)
    if n == 1:
        return v[0]
    v_pa, v_p = v[0], v[1]
    out = v_p + guidance_action * (v_pa - v_p)
    if n == 3:
        out = out + (guidance_text - 1.0) * (v_p - v[2])
    return out


def guidance_branch_count(guidance_text: float = 1.0, guidance_action: float = 1.0) -> int:
    """How many conditions `guided_velocity` runs as one batch: (p, a), plus (p, 0) when any scale
    is not 1, plus (0, 0) when the text scale is not 1. A KV cache read through `guided_velocity`
    needs this many rows per sample (one per branch: each branch is its own conditional model)."""
    return 1 + int(guidance_action != 1.0 or guidance_text != 1.0) + int(guidance_text != 1.0)


def check_temperature(value, arg: str, trained: str = "the trained noise") -> float:
    """A sampling temperature (the scale of the starting noise draws) checked to be a number in
    (0, 2]; otherwise a ValueError naming `arg` (e.g. "--teacher-temperature")."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < value <= 2.0:
        raise ValueError(f"{arg}: must be a number in (0, 2] (1.0 = {trained}), got {value!r}")
    return float(value)


@torch.no_grad()
def ode_sample(model: DiT, schedule: FlowSchedule, noise: torch.Tensor, cond: Cond, context: torch.Tensor | None = None,
               num_steps: int = 50, guidance_text: float = 1.0, guidance_action: float = 1.0,
               record_at: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None, progress: bool = False):
    """Euler integration of the teacher's probability-flow ODE from t=1 to 0 over the frames after a
    clean `context` prefix (B, C, Tc, h, w), which stays at t = 0 throughout.

    Returns (x0 (B, C, Tg, h, w), {t: state at t} for each level in `record_at`)."""
    ts = schedule.teacher_timesteps(num_steps, include=record_at)
    Tc = 0 if context is None else context.shape[2]
    x = noise
    B, Tg = noise.shape[0], noise.shape[2]
    recorded = {}
    rec = set() if record_at is None else {round(float(r), 6) for r in record_at}
    it = range(len(ts) - 1)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="ode", leave=False)
    for i in it:
        t_cur, t_next = float(ts[i]), float(ts[i + 1])
        if round(t_cur, 6) in rec:
            recorded[round(t_cur, 6)] = x.clone()
        x_in = x if context is None else torch.cat([context, x], dim=2)
        t_in = torch.cat([torch.zeros(B, Tc), torch.full((B, Tg), t_cur)], 1).to(x)
        v = guided_velocity(model, x_in, t_in, cond, guidance_text, guidance_action, frame_mask=frame_mask)[:, :, Tc:]
        x = x + (t_next - t_cur) * v
    return x, recorded


@torch.no_grad()
def write_context(model: DiT, cache: KVCache, latents: torch.Tensor, cond: Cond, context_noise: float = 0.0) -> None:
    """Write real latents (B, C, T, h, w) into the cache chunk by chunk (at t = 0, or re-noised to
    the context noise level; see `write_chunk`)."""
    c = model.config.latent_frames_per_chunk
    F = model.config.frames_per_latent
    for s in range(0, latents.shape[2], c):
        x = latents[:, :, s:s + c]
        write_chunk(model, cache, x, cond.frames(s, s + x.shape[2], F), context_noise)


def student_sample_chunk(model: DiT, cache: KVCache, noise: torch.Tensor, cond: Cond, timesteps: torch.Tensor,
                         renoise: list[torch.Tensor] | None = None, exit_step: int | None = None,
                         write: bool = True, context_noise: float = 0.0, context_eps: torch.Tensor | None = None,
                         grad_at_exit: bool = False, cache_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Few-step generation of one chunk attending to the cache.

    At each student level t_i: predict x0, then re-noise it with fresh noise to t_{i+1}; the last
    prediction is the chunk. `renoise[i]` supplies the noise used after step i (seeded per env by
    the caller). `exit_step` stops early (Self-Forcing's random exit). Finally the chunk is run
    once more to write its keys/values (`write`): clean at t = 0, or -- with `context_noise` c > 0
    (context-noise augmentation) -- re-noised to level c with `context_eps` and tagged with t = c.

    `grad_at_exit` (self-forcing training): every step runs without gradient except the exit step,
    whose prediction carries the gradient; the cache stays detached, unless `cache_grad`: then the
    writing pass runs under autograd too and keeps its keys/values' graph for later chunks' exit
    steps: a gradient through the cache to the chunks' content, with the writing pass's weights
    held fixed (they also encode the real context). The numbers are unchanged.
    Returns (x0, input at the exit step)."""
    if cache_grad and not (grad_at_exit and write):
        raise ValueError("student_sample_chunk: cache_grad needs grad_at_exit=True and write=True")
    B, _, c = noise.shape[:3]
    x = noise
    last = len(timesteps) - 1 if exit_step is None else exit_step
    # what every pass shares, computed once: the chunk's cache slots, mask and RoPE tables, and the
    # conditioning at each level (with gradient when the exit step needs it)
    plan = model.plan_chunk(cache, c)
    levels = [float(timesteps[i]) for i in range(last + 1)] + ([float(context_noise)] if write else [])
    with torch.set_grad_enabled(grad_at_exit and torch.is_grad_enabled()):
        mods = model.pass_modulations(levels, cond.action_feats, cond.action_null, cond.text)
    x0 = x_in = None
    for i in range(last + 1):
        t = torch.full((B, c), levels[i], device=noise.device)
        x_in = x
        with torch.set_grad_enabled(grad_at_exit and i == last):
            v = model.forward_chunk(x, t, cond.action_feats, cond.action_null, cond.text, cache, write=False, plan=plan, mod=mods[i])
            x0 = x - t[:, None, :, None, None] * v
        if i < last:
            eps = renoise[i] if renoise is not None else torch.randn_like(x0)
            tn = float(timesteps[i + 1])
            x = (1 - tn) * x0 + tn * eps
    if write and cache_grad and torch.is_grad_enabled():
        # the gradient reaches the chunk's content, not the writing pass's weights: they also read the
        # real context, which a loss on generated chunks must not retune
        pw, m = pending_write(x0, cond, context_noise, context_eps), mods[-1]
        wmod = PassModulation(m.c.detach(), [b.detach() for b in m.blocks], m.final.detach())  # the conditioning's weights too
        with frozen_parameters(model):
            model.forward_chunk(pw.x, torch.full((B, c), pw.level, device=noise.device), cond.action_feats, cond.action_null,
                                cond.text, cache, write=True, plan=plan, mod=wmod, keep_grad=True)
    elif write:
        write_chunk(model, cache, x0.detach(), cond, context_noise, context_eps, plan=plan, mod=mods[-1])
    return x0, x_in


@contextmanager
def frozen_parameters(model: torch.nn.Module):
    """Inside: no parameter of `model` requires grad (autograd still tracks the inputs); restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@torch.no_grad()
def write_chunk(model: DiT, cache: KVCache, x0: torch.Tensor, cond: Cond, context_noise: float = 0.0,
                context_eps: torch.Tensor | None = None, plan: ChunkPlan | None = None, mod: PassModulation | None = None) -> None:
    """The cache-writing pass of a finished chunk x0 (B, C, c, h, w): at t = 0, or at the context
    noise level c with x = (1 - c) x0 + c eps (what the model was trained to read as context).
    `plan` / `mod`: the chunk's plan and the conditioning at level c, when the sampler made them."""
    write_pending(model, cache, pending_write(x0, cond, context_noise, context_eps), plan, mod)


# -- streaming with the cache-writing pass folded into the next chunk's first step ----------------
@dataclass
class PendingWrite:
    """A finished chunk whose cache-writing pass has not run yet: it runs inside the next chunk's
    first denoising pass (`sample_chunk_fused`), or alone (`write_pending`) when no chunk follows
    under the same prompt."""
    x: torch.Tensor  # (B, C, c, h, w) the writing pass's input: x0, or x0 re-noised to the context level
    level: float  # its noise level (the context noise)
    cond: Cond  # its actions and prompt
    envs: torch.Tensor  # (B,) bool, on the host: envs that have one (False: the env's episode starts with the next chunk)


def pending_write(x0: torch.Tensor, cond: Cond, context_noise: float = 0.0, context_eps: torch.Tensor | None = None) -> PendingWrite:
    """The writing pass of the finished chunk x0: its input is x0, or x0 re-noised to the context
    level with `context_eps` (drawn here when None)."""
    x = x0
    if context_noise > 0:
        eps = context_eps if context_eps is not None else torch.randn_like(x0)
        x = (1 - context_noise) * x0 + context_noise * eps
    return PendingWrite(x, float(context_noise), cond, torch.ones(x0.shape[0], dtype=torch.bool))


@torch.no_grad()
def write_pending(model: DiT, cache: KVCache, pending: PendingWrite, plan: ChunkPlan | None = None,
                  mod: PassModulation | None = None) -> None:
    """Run a writing pass on its own (every env must have one): the keys/values of `pending.x` at
    its level are kept in the cache."""
    if not bool(pending.envs.all()):
        raise ValueError("write_pending: every env must have a pending chunk; reset envs drop theirs")
    B, c = pending.x.shape[0], pending.x.shape[2]
    t = torch.full((B, c), pending.level, device=pending.x.device)
    model.forward_chunk(pending.x, t, pending.cond.action_feats, pending.cond.action_null, pending.cond.text, cache, write=True,
                        plan=plan, mod=mod)


@torch.no_grad()
def sample_chunk_fused(model: DiT, cache: KVCache, noise: torch.Tensor, cond: Cond, timesteps: torch.Tensor,
                       renoise: list[torch.Tensor], pending: PendingWrite | None) -> torch.Tensor:
    """`student_sample_chunk` with the writing pass moved: the previous chunk's pending write and
    this chunk's first step share one pass over both (the written chunk cannot see the new one),
    and this chunk's own write is left to the caller as the next `PendingWrite`. Four passes per
    chunk instead of five, the same numbers (tested against `student_sample_chunk`).

    `pending` must carry the same prompt as `cond` (flush it with `write_pending` before a prompt
    change); None or no env pending: a plain first step. Returns the chunk x0 (B, C, c, h, w)."""
    B, _, c = noise.shape[:3]
    levels = [float(x) for x in timesteps]
    t0 = torch.full((B, c), levels[0], device=noise.device)
    if pending is not None and bool(pending.envs.any()):
        plan = model.plan_fused(cache, pending.envs)
        x = torch.cat([pending.x, noise], 2)  # (B, C, 2c, h, w): the finished chunk, then the new one
        t = torch.cat([torch.full((B, c), pending.level, device=noise.device), t0], 1)
        af = torch.cat([pending.cond.action_feats, cond.action_feats], 1)
        an = torch.cat([pending.cond.action_null, cond.action_null], 1)
        v = model.forward_chunk(x, t, af, an, cond.text, cache, write=False, plan=plan)[:, :, c:]
        cache.finish_fused(pending.envs)
        first = 1
        x0 = noise - t0[:, None, :, None, None] * v
    else:
        first, x0 = 0, None
    plan = model.plan_chunk(cache, c)
    mods = model.pass_modulations(levels[first:], cond.action_feats, cond.action_null, cond.text)  # the passes still to run
    x = noise
    for i in range(first, len(levels)):
        if i > 0:
            x = (1 - levels[i]) * x0 + levels[i] * renoise[i - 1]
        t = torch.full((B, c), levels[i], device=noise.device)
        v = model.forward_chunk(x, t, cond.action_feats, cond.action_null, cond.text, cache, write=False, plan=plan,
                                mod=mods[i - first])
        x0 = x - t[:, None, :, None, None] * v
    return x0
