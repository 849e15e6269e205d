"""Asymmetric distribution matching distillation (METHOD.md, point 5).

Three networks: the causal student G; the frozen teacher as the "real" score (with CFG); a "fake"
score initialised from the teacher and trained with the ordinary diffusion loss on G's outputs,
`ttur` (5) updates per generator update. Generator gradient: (x0_fake - x0_real_cfg), normalised
by mean |x - x0_real_cfg|; loss = 0.5 * MSE(x, (x - grad).detach()).

How G produces the clip it is judged on (`rollout`):
- "teacher_forcing" (CausVid): every chunk is denoised against the *real* earlier chunks as clean
  context, all chunks in parallel; each chunk exits at a random student step.
- "self_rollout" (Self-Forcing): G generates chunk after chunk with its own KV cache, each chunk
  exiting at a random student step, so it is trained on its own context as at inference.
Either way the final, gradient-carrying step is one block-causal forward with the clean context
copy; by the cache invariant it equals what the cached rollout computed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from distill.batches import PromptBank, make_batch
from distill.training_utils import ScalarLogger, is_done, load_training_state, mark_done, save_training_state, seed_everything
from models.actions import ActionCodec
from models.dit import DiT
from models.masks import teacher_forcing_mask
from models.samplers import Cond, guided_velocity, student_sample_chunk, write_context
from models.schedule import FlowSchedule


@dataclass
class DMDConfig:
    steps: int = 300  # generator updates
    batch_size: int = 8
    clip_latent_frames: int = 8
    context_frames: int = 1
    p_no_context: float = 0.15
    lr_generator: float = 2e-5
    lr_fake: float = 2e-5
    ttur: int = 5
    guidance_text: float = 1.5
    guidance_action: float = 2.0
    t_min: float = 0.02
    t_max: float = 0.98
    grad_clip: float = 10.0
    rollout: str = "teacher_forcing"  # or "self_rollout"
    seed: int = 0
    save_every: int = 25
    log_every: int = 5


class Generator:
    """Produces G's clip for a batch: context (B, C, k, ...) real + generated frames."""

    def __init__(self, schedule: FlowSchedule, rollout: str):
        if rollout not in ("teacher_forcing", "self_rollout"):
            raise ValueError(f"rollout: expected 'teacher_forcing' or 'self_rollout', got {rollout!r}")
        self.schedule, self.rollout = schedule, rollout
        self.ts = schedule.student_timesteps()

    def __call__(self, student, raw: DiT, real: torch.Tensor, k: int, cond: Cond, rng: np.random.Generator, grad: bool):
        B, C, T, h, w = real.shape
        chunk = raw.config.latent_frames_per_chunk
        S = len(self.ts)
        n_chunks = -(-T // chunk)
        exit_idx = torch.from_numpy(rng.integers(0, S, size=(B, n_chunks))).repeat_interleave(chunk, 1)[:, :T]
        t_exit = self.ts[exit_idx]  # (B, T)
        with torch.no_grad():
            if self.rollout == "teacher_forcing":
                clean = real
                x = torch.randn(B, C, T, h, w)
                x_in = x.clone()
                mask = teacher_forcing_mask(T, chunk)
                for s in range(S):
                    here = (exit_idx == s)[:, None, :, None, None]
                    x_in = torch.where(here, x, x_in)
                    if s == S - 1 or bool((exit_idx <= s).all()):
                        break
                    t = torch.full((B, T), float(self.ts[s]))
                    v = raw(x, t, cond.action_feats, cond.action_null, cond.text, frame_mask=mask, x_clean=clean)
                    x0 = self.schedule.x0_from_v(x, v, t)
                    tn = float(self.ts[s + 1])
                    x = (1 - tn) * x0 + tn * torch.randn_like(x0)
            else:
                cache = raw.new_cache(B, window_frames=T + chunk)
                F_ = raw.config.frames_per_latent
                if k:
                    write_context(raw, cache, real[:, :, :k], cond.frames(0, k, F_))
                outs, ins = [real[:, :, :k]], [real[:, :, :k]]
                for c0 in range(k, T, chunk):
                    c1 = min(T, c0 + chunk)
                    # one exit step per chunk (shared by the batch in a cached rollout)
                    e = int(exit_idx[0, c0])
                    exit_idx[:, c0:c1] = e
                    x0, xin = student_sample_chunk(raw, cache, torch.randn(B, C, c1 - c0, h, w), cond.frames(c0, c1, F_), self.ts, exit_step=e)
                    outs.append(x0)
                    ins.append(xin)
                clean = torch.cat(outs, dim=2)
                x_in = torch.cat(ins, dim=2)
                t_exit = self.ts[exit_idx]
        t_exit = t_exit.clone()
        t_exit[:, :k] = 0.0
        x_in = torch.cat([real[:, :, :k], x_in[:, :, k:]], dim=2)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            v = student(x_in, t_exit, cond.action_feats, cond.action_null, cond.text, frame_mask=teacher_forcing_mask(T, chunk), x_clean=clean)
            x0 = self.schedule.x0_from_v(x_in, v, t_exit)
        return torch.cat([real[:, :, :k], x0[:, :, k:]], dim=2)


def _score(net: DiT, x, t, cond: Cond, causal: bool, guidance, clean) -> torch.Tensor:
    if causal:
        chunk = net.config.latent_frames_per_chunk
        return guided_velocity(net, x, t, cond, *guidance, frame_mask=teacher_forcing_mask(x.shape[2], chunk), x_clean=clean)
    return guided_velocity(net, x, t, cond, *guidance)


def train_dmd(student_init: DiT, real_score: DiT, dataset, codec: ActionCodec, bank: PromptBank, schedule: FlowSchedule,
              cfg: DMDConfig, stage_dir, causal_teacher: bool = False, accelerator=None) -> dict:
    stage_dir = Path(stage_dir)
    if is_done(stage_dir):
        return {}
    from accelerate import Accelerator
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    seed_everything(cfg.seed + acc.process_index)
    G = copy.deepcopy(student_init).train()
    fake = copy.deepcopy(real_score).train()
    real_score = real_score.eval().requires_grad_(False)
    opt_g = torch.optim.AdamW(G.parameters(), lr=cfg.lr_generator, betas=(0.0, 0.999))
    opt_f = torch.optim.AdamW(fake.parameters(), lr=cfg.lr_fake, betas=(0.0, 0.999))
    step, _ = load_training_state(stage_dir, {"generator": G, "fake": fake}, {"opt_g": opt_g, "opt_f": opt_f})
    G_w, fake_w, opt_g, opt_f = acc.prepare(G, fake, opt_g, opt_f)
    G_raw, fake_raw = acc.unwrap_model(G_w), acc.unwrap_model(fake_w)
    gen = Generator(schedule, cfg.rollout)
    log = ScalarLogger(stage_dir / "log.jsonl")
    bar = tqdm(total=cfg.steps, initial=step, desc=f"dmd ({cfg.rollout})", disable=not acc.is_main_process, dynamic_ncols=True)

    def draw():
        k = 0 if rng.random() < cfg.p_no_context else cfg.context_frames
        clips = dataset.sample(cfg.batch_size, cfg.clip_latent_frames, rng, from_start=(k == 0))
        batch = make_batch(clips, codec, rng)
        return batch, k

    def noisy(x, k):
        B, T = x.shape[0], x.shape[2]
        u = torch.from_numpy(rng.uniform(cfg.t_min, cfg.t_max, size=(B, 1))).float()
        t = schedule.shift(u).expand(B, T).clone()
        t[:, :k] = 0.0
        eps = torch.randn_like(x)
        return schedule.add_noise(x, eps, t), t, eps

    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, acc.process_index, step])  # per-step stream: a resumed run draws exactly what an uninterrupted one would
        # -- fake score: diffusion loss on fresh generator samples (TTUR) --------------------------
        for _ in range(cfg.ttur):
            batch, k = draw()
            cond_f = batch.cond(fake_raw, bank)
            cond_g = batch.cond(G_raw, bank)
            with torch.no_grad():
                x = gen(G_w, G_raw, batch.latents, k, cond_g, rng, grad=False)
            xt, t, eps = noisy(x, k)
            v = _score(fake_w, xt, t, cond_f, causal_teacher, (1.0, 1.0), x)
            err = (v - schedule.v_target(x, eps)).pow(2).mean(dim=(1, 3, 4))[:, k:]
            loss_f = err.mean()
            opt_f.zero_grad(set_to_none=True)
            acc.backward(loss_f)
            acc.clip_grad_norm_(fake_w.parameters(), cfg.grad_clip)
            opt_f.step()
        # -- generator: distribution matching gradient --------------------------------------------
        batch, k = draw()
        cond_g = batch.cond(G_raw, bank)
        x = gen(G_w, G_raw, batch.latents, k, cond_g, rng, grad=True)
        xt, t, _ = noisy(x.detach(), k)
        with torch.no_grad():
            cond_r = batch.cond(real_score, bank, with_null_text=True)
            cond_f = batch.cond(fake_raw, bank)
            x0_real = schedule.x0_from_v(xt, _score(real_score, xt, t, cond_r, causal_teacher, (cfg.guidance_text, cfg.guidance_action), x.detach()), t)
            x0_fake = schedule.x0_from_v(xt, _score(fake_raw, xt, t, cond_f, causal_teacher, (1.0, 1.0), x.detach()), t)
            xg = x.detach()[:, :, k:]
            norm = (xg - x0_real[:, :, k:]).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-6)
            grad = torch.nan_to_num((x0_fake - x0_real)[:, :, k:] / norm)
        loss_g = 0.5 * F.mse_loss(x[:, :, k:], (x[:, :, k:] - grad).detach())
        opt_g.zero_grad(set_to_none=True)
        acc.backward(loss_g)
        gn = acc.clip_grad_norm_(G_w.parameters(), cfg.grad_clip)
        opt_g.step()
        step += 1
        bar.update(1)
        bar.set_postfix(dmd=f"{loss_g.item():.4f}", fake=f"{loss_f.item():.4f}")
        if step % cfg.log_every == 0 and acc.is_main_process:
            log.log(step, **{"losses/dmd": loss_g.item(), "losses/fake_score": loss_f.item(), "charts/generator_grad_norm": float(gn),
                             "charts/dmd_grad_abs": grad.abs().mean().item()})
        if (step % cfg.save_every == 0 or step == cfg.steps) and acc.is_main_process:
            save_training_state(stage_dir, step, {"generator": G_raw, "fake": fake_raw}, {"opt_g": opt_g, "opt_f": opt_f})
    bar.close()
    if acc.is_main_process:
        G_raw.save_pretrained(stage_dir / "model")
        mark_done(stage_dir, {"steps": step, "rollout": cfg.rollout, "causal_teacher": causal_teacher})
    acc.wait_for_everyone()
    return {"steps": step}
