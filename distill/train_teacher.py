"""Teacher training with flow matching on clips of latent frames.

`mode="bidirectional"` (the CausVid teacher): full attention over the clip. A random prefix of
the clip is clean context (t = 0, no loss) so the teacher learns both generating from a prompt
(no context) and continuing real video; the other frames share one noise level half of the time
and have independent levels otherwise.

`mode="causal"` (for the ablation): the block-causal DiT with a clean-context copy (teacher
forcing, models.masks.teacher_forcing_mask) and an independent noise level per chunk
(diffusion forcing); sampled chunk by chunk with many steps and a KV cache.

Prompt and action dropout train the unconditional branches for classifier-free guidance.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from distill.batches import PromptBank, make_batch
from distill.training_utils import StageRunner
from models.actions import ActionCodec
from models.dit import DiT, DiTConfig
from models.masks import teacher_forcing_mask
from models.schedule import FlowSchedule, ScheduleConfig


@dataclass
class TeacherTrainConfig:
    mode: str = "bidirectional"  # or "causal" (ablation)
    steps: int = 3000
    batch_size: int = 16
    clip_latent_frames: int = 8
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_drop_text: float = 0.1
    p_drop_action: float = 0.1
    p_no_context: float = 0.15  # bidirectional: clips generated from the prompt alone
    max_context_frames: int = 4
    p_shared_t: float = 0.5  # bidirectional: one noise level for all generated frames
    context_noise_max: float = 0.0  # context-noise augmentation: context frames noised to a level in [0, max] ...
    p_context_noise: float = 0.5  # ... in this fraction of clips, the level given to the model as their timestep
    seed: int = 0
    save_every: int = 200
    log_every: int = 20
    dit: DiTConfig = field(default_factory=DiTConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


def sample_noise_levels(schedule: FlowSchedule, B: int, T: int, cfg: TeacherTrainConfig, rng: np.random.Generator,
                        chunk: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """-> t (B, T) and loss mask (B, T) (False on clean context frames)."""
    if mode == "causal":
        n_chunks = -(-T // chunk)
        t = schedule.shift(torch.from_numpy(rng.random((B, n_chunks))).float()).repeat_interleave(chunk, 1)[:, :T]
        return t, torch.ones(B, T, dtype=torch.bool)
    shared = schedule.shift(torch.from_numpy(rng.random((B, 1))).float()).expand(B, T)
    indep = schedule.shift(torch.from_numpy(rng.random((B, T))).float())
    use_shared = torch.from_numpy(rng.random((B, 1)) < cfg.p_shared_t)
    t = torch.where(use_shared, shared, indep).clone()
    k = rng.integers(1, cfg.max_context_frames + 1, size=B)
    k[rng.random(B) < cfg.p_no_context] = 0
    ctx = torch.arange(T)[None] < torch.from_numpy(k)[:, None]
    level = torch.from_numpy(rng.uniform(0, cfg.context_noise_max, size=(B, 1)) * (rng.random((B, 1)) < cfg.p_context_noise)).float()
    t = torch.where(ctx, level.expand(B, T), t)  # context frames: clean, or lightly noised (GameNGen / DIAMOND)
    return t, ~ctx


def diffusion_loss(model, raw: DiT, schedule: FlowSchedule, batch, bank: PromptBank, cfg: TeacherTrainConfig,
                   rng: np.random.Generator, mode: str) -> torch.Tensor:
    """Flow-matching loss on a LatentBatch; `mode` bidirectional or causal (teacher forcing).
    `model` may be a DDP wrapper of `raw` (which supplies the config and the text conditioning)."""
    x0 = batch.latents
    B, _, T = x0.shape[:3]
    chunk = raw.config.latent_frames_per_chunk
    t, loss_mask = sample_noise_levels(schedule, B, T, cfg, rng, chunk, mode)
    t, loss_mask = t.to(x0.device), loss_mask.to(x0.device)
    eps = torch.randn_like(x0)
    xt = schedule.add_noise(x0, eps, t)
    cond = batch.cond(raw, bank)
    if mode == "causal":
        v = model(xt, t, cond.action_feats, cond.action_null, cond.text, frame_mask=teacher_forcing_mask(T, chunk, device=x0.device), x_clean=x0)
    else:
        v = model(xt, t, cond.action_feats, cond.action_null, cond.text)
    err = (v - schedule.v_target(x0, eps)).pow(2).mean(dim=(1, 3, 4))  # (B, T) per frame
    return (err * loss_mask).sum() / loss_mask.sum().clamp(min=1)


def lr_at(step: int, cfg) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def train_teacher(dataset, codec: ActionCodec, bank: PromptBank, cfg: TeacherTrainConfig, stage_dir, init_from: DiT | None = None,
                  accelerator=None) -> dict:
    """Train a teacher on `dataset` (LatentClipDataset). Resumable; writes `stage_dir/model` (the EMA)."""
    tag = "teacher" if cfg.mode == "bidirectional" else "causal_teacher"
    runner = StageRunner(stage_dir, tag, cfg, accelerator)
    if runner.done:
        return {}
    model = DiT(cfg.dit) if init_from is None else copy.deepcopy(init_from)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    runner.resume({"model": model, "ema": ema}, {"opt": opt})
    model, opt = runner.prepare(model, opt)
    raw = runner.unwrap(model)
    schedule = FlowSchedule(cfg.schedule)

    def train_step(step: int, rng: np.random.Generator):
        clips = dataset.sample(cfg.batch_size, cfg.clip_latent_frames, rng)
        batch = make_batch(clips, codec, rng, cfg.p_drop_text, cfg.p_drop_action).to(runner.device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = diffusion_loss(model, raw, schedule, batch, bank, cfg, rng, cfg.mode)
        opt.zero_grad(set_to_none=True)
        runner.backward(loss)
        gnorm = runner.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            n = step + 1  # optimiser steps taken
            d = min(cfg.ema_decay, (1 + n) / (10 + n))
            for pe, pm in zip(ema.parameters(), raw.parameters()):
                pe.lerp_(pm.detach(), 1 - d)
        return ({f"losses/{tag}": loss.item(), "charts/grad_norm": float(gnorm), "charts/lr": lr_at(n, cfg)},
                {"loss": f"{loss.item():.4f}"})

    steps = runner.run(train_step)
    return runner.finish({"steps": steps}, lambda: ema.save_pretrained(runner.stage_dir / "model"))
