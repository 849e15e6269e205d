"""Teacher training with flow matching on clips of latent frames.

`mode="bidirectional"` (the CausVid teacher): full attention over the clip. A random prefix of
the clip is clean context (t = 0, no loss) so the teacher learns both generating from a prompt
(no context) and continuing real video; the other frames share one noise level half of the time
and have independent levels otherwise.

`mode="causal"` (for the ablation): the block-causal DiT with a clean-context copy (teacher
forcing, models.masks.teacher_forcing_mask) and an independent noise level per chunk
(diffusion forcing); sampled chunk by chunk with many steps and a KV cache.

Prompt and action dropout train the unconditional branches for classifier-free guidance.

Action following (bidirectional mode, when a `distill.branches.BranchSampler` is given): part of
every batch is *pairs* of clips that share a real context and differ only in a held push (left vs
right from the same simulator state, then the same actions), noised with the same levels and the
same noise. Besides their ordinary flow-matching loss, the difference of the two predictions is
regressed onto the difference of the targets (`pair_difference_loss`): with shared noise the
target difference is exactly minus the difference of the two real futures, the effect of the
action, free of the noise that dominates the ordinary loss. Another part of the batch is single
branch clips (left, right or random continuations), whose actions are independent of the state.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from distill.batches import PromptBank, make_batch
from distill.training_utils import StageRunner, update_ema
from models.actions import ActionCodec
from models.dit import DiT, DiTConfig
from models.heads import StateHead
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
    pair_fraction: float = 0.0  # fraction of the batch that is branch pairs (left/right from one state); needs branches
    branch_fraction: float = 0.0  # fraction of the batch that is single branch clips (any kind)
    pair_weight: float = 2.0  # weight of the paired difference loss (on top of each member's own loss)
    state_weight: float = 0.0  # auxiliary action-effect loss: the frozen state head on the x0 prediction vs the real states
    state_max_t: float = 0.5  # ... on frames noised at most this much (a blurred high-noise x0 is outside what the head read)
    seed: int = 0
    save_every: int = 200
    max_seconds: float = 0.0  # wall-clock budget of the stage (0: none): it ends, saved and done, at the step reached
    snapshot_every: int = 0  # also keep the EMA every N steps (model_stepN/): the push-response learning curve reads them
    log_every: int = 20
    dit: DiTConfig = field(default_factory=DiTConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


def sample_noise_levels(schedule: FlowSchedule, B: int, T: int, cfg: TeacherTrainConfig, rng: np.random.Generator,
                        chunk: int, mode: str, context: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> t (B, T) and loss mask (B, T) (False on clean context frames). `context` (B,): a fixed
    number of context frames per clip where >= 0 (branch clips: the trunk part), drawn where < 0."""
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
    if context is not None:
        k = np.where(np.asarray(context) >= 0, np.asarray(context), k)
    ctx = torch.arange(T)[None] < torch.from_numpy(k)[:, None]
    level = torch.from_numpy(rng.uniform(0, cfg.context_noise_max, size=(B, 1)) * (rng.random((B, 1)) < cfg.p_context_noise)).float()
    t = torch.where(ctx, level.expand(B, T), t)  # context frames: clean, or lightly noised (GameNGen / DIAMOND)
    return t, ~ctx


def diffusion_loss(model, raw: DiT, schedule: FlowSchedule, batch, bank: PromptBank, cfg: TeacherTrainConfig,
                   rng: np.random.Generator, mode: str, context: np.ndarray | None = None, num_pairs: int = 0,
                   parts: dict | None = None, state_head: StateHead | None = None) -> torch.Tensor:
    """Flow-matching loss on a LatentBatch; `mode` bidirectional or causal (teacher forcing).
    `model` may be a DDP wrapper of `raw` (which supplies the config and the text conditioning).
    `context` (B,): fixed context lengths (-1 = drawn). The last 2 * `num_pairs` clips are pairs
    (first all left members, then all right members): each pair gets one noise draw and level, and
    `cfg.pair_weight` x `pair_difference_loss` is added. With a frozen `state_head`, `cfg.state_weight` x
    `state_readout_loss` is added. `parts`, if given, receives the loss terms."""
    x0 = batch.latents
    B, _, T = x0.shape[:3]
    chunk = raw.config.latent_frames_per_chunk
    t, loss_mask = sample_noise_levels(schedule, B, T, cfg, rng, chunk, mode, context)
    t, loss_mask = t.to(x0.device), loss_mask.to(x0.device)
    eps = torch.randn_like(x0)
    P = num_pairs
    if P:  # right members take their left twin's noise and levels (their contexts are equal by construction)
        t, loss_mask, eps = (torch.cat([a[:B - P], a[B - 2 * P:B - P]]) for a in (t, loss_mask, eps))
    xt = schedule.add_noise(x0, eps, t)
    cond = batch.cond(raw, bank)
    if mode == "causal":
        v = model(xt, t, cond.action_feats, cond.action_null, cond.text, frame_mask=teacher_forcing_mask(T, chunk, device=x0.device), x_clean=x0)
    else:
        v = model(xt, t, cond.action_feats, cond.action_null, cond.text)
    target = schedule.v_target(x0, eps)
    err = (v - target).pow(2).mean(dim=(1, 3, 4))  # (B, T) per frame
    loss = (err * loss_mask).sum() / loss_mask.sum().clamp(min=1)
    if parts is not None:
        parts["fm"] = loss.detach()
    if P:
        sl, sr = slice(B - 2 * P, B - P), slice(B - P, B)
        diff = pair_difference_loss(v[sl], v[sr], target[sl], target[sr], loss_mask[sl])
        loss = loss + cfg.pair_weight * diff
        if parts is not None:
            parts["pair"] = diff.detach()
    if state_head is not None and cfg.state_weight > 0:
        if batch.states is None:
            raise ValueError("teacher.state_weight > 0 needs clips with per-frame 'states' (collected data has them)")
        acted = ~batch.action_null.all(dim=1)  # clips whose actions were dropped have no determined future
        sl = state_readout_loss(state_head, schedule.x0_from_v(xt, v, t), batch.states,
                                loss_mask & acted[:, None] & (t <= cfg.state_max_t))
        loss = loss + cfg.state_weight * sl
        if parts is not None:
            parts["state"] = sl.detach()
    return loss


def state_readout_loss(state_head: StateHead, x0_pred: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                       dims: tuple | None = None) -> torch.Tensor:
    """Mean squared error of the (standardised) states read by the frozen `state_head` off the predicted
    clean latents `x0_pred` (B, C, T, h, w) against the real `states` (B, T*F, S), over the latent frames
    in `mask` (B, T). It weights the pole's few latent values by the angle they show instead of by their
    share of the frame. The caller masks out heavily noised frames: there the x0 prediction is a blurred
    mean the head (trained on clean latents) misreads (measured at the v3 teacher: a state error of ~13
    squared standard deviations over all levels against a flow-matching loss of ~0.1). `dims`: the state
    dimensions compared (None: all)."""
    B, _, T = x0_pred.shape[:3]
    err = (state_head(x0_pred) - state_head.standardise(states)).pow(2)
    if dims is not None:
        err = err[..., list(dims)]
    err = err.mean(-1).view(B, T, -1).mean(-1)  # (B, T)
    m = mask.float()
    return (err * m).sum() / m.sum().clamp(min=1)


def pair_difference_loss(v_a: torch.Tensor, v_b: torch.Tensor, target_a: torch.Tensor, target_b: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted difference (v_a - v_b) against the target difference, over
    the generated frames (`mask` (P, T)). Latents (P, C, T, h, w). With shared noise the target
    difference is x0_b - x0_a: the effect of the actions that tell the two clips apart."""
    err = ((v_a - v_b) - (target_a - target_b)).pow(2).mean(dim=(1, 3, 4))  # (P, T)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def lr_at(step: int, cfg) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def batch_sizes(cfg: TeacherTrainConfig, has_branches: bool) -> tuple[int, int, int]:
    """-> (ordinary clips, single branch clips, pairs) in a batch of cfg.batch_size."""
    if not has_branches or cfg.mode != "bidirectional":
        return cfg.batch_size, 0, 0
    P = int(round(cfg.batch_size * cfg.pair_fraction / 2))
    S = int(round(cfg.batch_size * cfg.branch_fraction))
    if 2 * P + S > cfg.batch_size:
        raise ValueError(f"teacher.pair_fraction + teacher.branch_fraction: {cfg.pair_fraction} + {cfg.branch_fraction} "
                         f"leave no room in a batch of {cfg.batch_size}; keep their sum <= 1")
    return cfg.batch_size - 2 * P - S, S, P


def sample_training_clips(dataset, branches, cfg: TeacherTrainConfig, rng: np.random.Generator) -> tuple[list, np.ndarray, int]:
    """One batch's clips: ordinary clips, single branch clips, then left and right pair members.
    -> (clips, context lengths (-1 = drawn), number of pairs)."""
    n_plain, n_single, P = batch_sizes(cfg, branches is not None)
    T = cfg.clip_latent_frames
    clips = dataset.sample(n_plain, T, rng)
    ctx = [-1] * n_plain
    if n_single:
        single, k = branches.sample(n_single, T, rng)
        clips, ctx = clips + single, ctx + k
    if P:
        left, right, k = branches.pairs(P, T, rng)
        clips, ctx = clips + left + right, ctx + k + k
    return clips, np.asarray(ctx), P


def train_teacher(dataset, codec: ActionCodec, bank: PromptBank, cfg: TeacherTrainConfig, stage_dir, init_from: DiT | None = None,
                  accelerator=None, branches=None, state_head: StateHead | None = None) -> dict:
    """Train a teacher on `dataset` (a `ClipSampler`), and on `branches` (a `distill.branches.BranchSampler`)
    when given. `init_from`: warm start from these weights. `state_head`: the frozen reader of the
    auxiliary loss (needed when `cfg.state_weight` > 0). Resumable; writes `stage_dir/model` (the EMA)."""
    if cfg.state_weight > 0 and state_head is None:
        raise ValueError("teacher.state_weight > 0 needs a trained state head (the pipeline's state_head stage)")
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
    ema.to(runner.device)  # the EMA follows the model onto its device (it is saved from there)
    schedule = FlowSchedule(cfg.schedule)
    if state_head is not None:
        state_head = state_head.to(runner.device).eval().requires_grad_(False)

    def train_step(step: int, rng: np.random.Generator):
        clips, ctx, P = sample_training_clips(dataset, branches, cfg, rng)
        # a pair keeps its prompt and its actions: the difference must come from the actions
        batch = make_batch(clips, codec, rng, cfg.p_drop_text, cfg.p_drop_action,
                           keep_from=len(clips) - 2 * P if P else None).to(runner.device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        parts = {}
        loss = diffusion_loss(model, raw, schedule, batch, bank, cfg, rng, cfg.mode, ctx, P, parts, state_head)
        opt.zero_grad(set_to_none=True)
        runner.backward(loss)
        gnorm = runner.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            n = step + 1  # optimiser steps taken
            update_ema(ema, raw, min(cfg.ema_decay, (1 + n) / (10 + n)))
        if cfg.snapshot_every and n % cfg.snapshot_every == 0 and runner.is_main:
            ema.save_pretrained(runner.stage_dir / f"model_step{n}")
        logged = {f"losses/{tag}": loss.item(), "charts/grad_norm": float(gnorm), "charts/lr": lr_at(n, cfg)}
        if len(parts) > 1:  # the terms of a composite loss
            logged |= {f"losses/{tag}_{k}": v.item() for k, v in parts.items()}
        return (logged,
                {"loss": f"{loss.item():.4f}"})

    steps = runner.run(train_step)
    return runner.finish({"steps": steps}, lambda: ema.save_pretrained(runner.stage_dir / "model"))
