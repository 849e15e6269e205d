"""ODE initialisation: the causal student (teacher's weights, block-causal with a clean-context
copy) regressed onto the teacher's clean ODE results from inputs whose chunks sit at independently
chosen student timesteps. A stabiliser before DMD (METHOD.md, point 4)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from distill.batches import PromptBank, draw_context_noise
from distill.training_utils import StageRunner
from models.dit import DiT
from models.masks import teacher_forcing_mask
from models.samplers import Cond
from models.schedule import FlowSchedule


@dataclass
class ODEInitConfig:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-4
    grad_clip: float = 1.0
    context_noise_max: float = 0.0  # context-noise augmentation of the clean copy (the cache) ...
    p_context_noise: float = 0.5  # ... in this fraction of batches, level uniform in [0, max]
    seed: int = 0
    save_every: int = 100
    max_seconds: float = 0.0  # wall-clock budget of the stage (0: none): it ends, saved and done, at the step reached
    log_every: int = 10
    contrast_weight: float = 0.0  # weight of the contrast loss on contrast shards (`contrast_loss`), drawn ...
    p_contrast: float = 0.5  # ... for this fraction of steps when the pairs hold contrast shards
    contrast_chunks: int = 0  # generated chunks the contrast loss covers (0: all; 1: the first, where the context is shared)
    regression_weight: float = 1.0  # weight of the regression onto the teacher's results; 0 with contrast_weight > 0: a
    # contrast-only fine-tune (every batch a contrast batch), e.g. of a DMD student, whose own samples it should keep ...
    keep_weight: float = 0.0  # ... by this loss: the common mode of each contrast pair (what the contrast loss does not
    # see) regressed onto the starting weights' own (frozen), so only the action's effect moves (`keep_loss`)
    regression_min_context: int = 0  # > 0: the regression onto the teacher covers only pairs whose real context holds at
    # least this many latent frames (a 16-frame clip: 4); pairs with less context (image resets, prompts) are kept on the
    # starting weights' own predictions instead (`keep_loss`, weight keep_weight), so a teacher sampled where its context
    # is ambiguous does not move them (of a contrast pair only the common mode is kept: the contrast loss still teaches
    # the action's effect). 0: every pair is regressed (and keep_weight, if set, applies to every batch)

    def __post_init__(self):  # bad weights fail when the config is made, before any model is built
        if self.regression_min_context < 0:
            raise ValueError(f"ode_init.regression_min_context: must be >= 0, got {self.regression_min_context}")
        if self.regression_min_context > 0 and self.keep_weight <= 0:
            raise ValueError(f"ode_init.regression_min_context={self.regression_min_context} keeps the pairs with less context on "
                             "the starting weights: it needs ode_init.keep_weight > 0 (e.g. 1.0)")
        if self.keep_weight < 0:
            raise ValueError(f"ode_init.keep_weight: must be >= 0, got {self.keep_weight}")
        if self.regression_weight < 0 or self.contrast_weight < 0 or self.regression_weight + self.contrast_weight == 0:
            raise ValueError(f"ode_init.regression_weight={self.regression_weight}, ode_init.contrast_weight={self.contrast_weight}: "
                             "both must be >= 0 and one of them > 0 (regression_weight=0 needs contrast_weight > 0: a contrast-only fine-tune)")


def pair_batch(shards: list[dict], B: int, rng: np.random.Generator):
    """B pairs from one random shard (pairs in a shard share the context length); from a contrast
    shard, B/2 contrast pairs, kept as rows i and B/2 + i."""
    s = shards[rng.integers(len(shards))]
    n = s["x0"].shape[0]
    if s.get("contrast", False):
        half = torch.from_numpy(rng.choice(n // 2, size=min(B // 2, n // 2), replace=False))
        idx = torch.cat([half, half + n // 2])
    else:
        idx = torch.from_numpy(rng.choice(n, size=min(B, n), replace=False))
    return {k: (v[idx] if torch.is_tensor(v) and v.ndim > 0 and k != "states" else v) for k, v in s.items()} | {"states": s["states"][:, idx]}


def contrast_shards(shards: list[dict], want: bool) -> list[dict]:
    """want=False: the plain shards; True: the contrast shards with a real context. From a prompt alone
    (no context) the bidirectional teacher draws a different first scene for each script (a first-
    chunk difference 10-50x that of a pushed chunk, measured), which no causal model could answer."""
    if not want:
        return [s for s in shards if not s.get("contrast", False)]
    return [s for s in shards if s.get("contrast", False) and s["context_frames"] > 0]


def contrast_loss(x0_pred: torch.Tensor, x_clean: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the action's effect: rows i and B/2 + i are one context under two action
    scripts, and the student's difference between them is regressed onto the teacher's, over the
    generated frames (`mask` (B, T)). Zero when the student reproduces the teacher's difference,
    whatever both rows share."""
    h = x0_pred.shape[0] // 2
    d_pred, d_true = x0_pred[:h] - x0_pred[h:], x_clean[:h] - x_clean[h:]
    err = (d_pred - d_true).pow(2).mean(dim=(1, 3, 4))
    m = mask[:h]
    return (err * m).sum() / m.sum()


def keep_loss(x0_pred: torch.Tensor, x0_frozen: torch.Tensor, mask: torch.Tensor, contrast: bool) -> torch.Tensor:
    """Mean squared error between the student's and the frozen starting model's predictions over the
    generated frames; for a contrast batch only their common mode (the mean of rows i and B/2 + i), so
    it leaves the action's effect, the difference of the rows, to the contrast loss."""
    if contrast:
        h = x0_pred.shape[0] // 2
        x0_pred, x0_frozen, mask = (x0_pred[:h] + x0_pred[h:]) / 2, (x0_frozen[:h] + x0_frozen[h:]) / 2, mask[:h]
    err = (x0_pred - x0_frozen).pow(2).mean(dim=(1, 3, 4))
    return (err * mask).sum() / mask.sum()


def student_inputs(pairs: dict, schedule: FlowSchedule, chunk: int, rng: np.random.Generator):
    """Per chunk an independent student level: -> x_in (B, C, T, h, w), t (B, T), loss mask (B, T).
    Contrast pairs (rows i and B/2 + i) share their levels."""
    real, states, k = pairs["real"], pairs["states"], pairs["context_frames"]
    S, B, C, Tg = states.shape[:4]
    T = real.shape[2]
    ts = schedule.student_timesteps()
    n_chunks = -(-T // chunk)
    rows = B // 2 if pairs.get("contrast", False) else B
    s_idx = torch.from_numpy(rng.integers(0, S, size=(rows, n_chunks))).repeat_interleave(chunk, 1)[:, :T]  # (rows, T)
    if rows < B:
        s_idx = s_idx.repeat(2, 1)
    gen_idx = s_idx[:, k:]  # (B, Tg)
    onehot = torch.nn.functional.one_hot(gen_idx, S).permute(2, 0, 1).float()  # (S, B, Tg)
    x_gen = (states * onehot[:, :, None, :, None, None]).sum(0)  # (B, C, Tg, h, w): state at each frame's level
    x_in = torch.cat([real[:, :, :k], x_gen], dim=2)
    t = ts[s_idx]
    t[:, :k] = 0.0
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, k:] = True
    return x_in, t, mask


def student_cond(model: DiT, bank: PromptBank, pairs: dict) -> Cond:
    prompts = [bank.prompts[int(i)] for i in pairs["prompt_index"]]
    tok, m, null = bank.batch(prompts)
    dev = next(model.parameters()).device
    return Cond(pairs["action_feats"].to(dev), pairs["action_null"].to(dev), model.encode_text(tok.to(dev), m.to(dev), null.to(dev)))


def ode_pair_losses(model, raw: DiT, bank: PromptBank, schedule: FlowSchedule, pairs: dict, rng: np.random.Generator, dev,
                    context_noise_max: float = 0.0, p_context_noise: float = 0.5, contrast_chunks: int = 0, frozen: DiT | None = None):
    """The student (`model`, `raw` its unwrapped module) on a batch of ODE pairs, block-causal with the
    clean copy (re-noised to a drawn context-noise level): -> (mean squared error of its clean
    prediction against the teacher's results over the generated frames, `contrast_loss` over the
    first `contrast_chunks` generated chunks (0: all) when the pairs are a contrast batch with a real
    context (see `contrast_shards`), else None, and with `frozen` (the starting weights) `keep_loss`
    on the same inputs, else None)."""
    chunk = raw.config.latent_frames_per_chunk
    x_in, t, mask = student_inputs(pairs, schedule, chunk, rng)
    T = x_in.shape[2]
    x_clean = torch.cat([pairs["real"][:, :, :pairs["context_frames"]], pairs["x0"]], dim=2)
    level = draw_context_noise(rng, context_noise_max, p_context_noise)
    t_clean = torch.full(t.shape, level)
    ctx_in = x_clean
    if level > 0:
        ctx_noise = torch.randn_like(x_clean)
        if pairs.get("contrast", False):  # both rows of a pair see the same noised context
            h = ctx_noise.shape[0] // 2
            ctx_noise[h:] = ctx_noise[:h]
        ctx_in = schedule.add_noise(x_clean, ctx_noise, t_clean)
    x_in, t, mask, x_clean, ctx_in, t_clean = (a.to(dev) for a in (x_in, t, mask, x_clean, ctx_in, t_clean))
    cond = student_cond(raw, bank, pairs)
    frame_mask = teacher_forcing_mask(T, chunk, device=dev)

    def predict(net):  # a network's clean prediction on these inputs
        v = net(x_in, t, cond.action_feats, cond.action_null, cond.text, frame_mask=frame_mask, x_clean=ctx_in, t_clean=t_clean)
        return schedule.x0_from_v(x_in, v, t)

    x0_pred = predict(model)
    err = (x0_pred - x_clean).pow(2).mean(dim=(1, 3, 4))
    loss = (err * mask).sum() / mask.sum()
    c_loss = k_loss = None
    is_contrast = pairs.get("contrast", False) and pairs["context_frames"] > 0
    if frozen is not None:
        with torch.no_grad():
            x0_frozen = predict(frozen)
        k_loss = keep_loss(x0_pred, x0_frozen, mask, is_contrast)
    if is_contrast:
        c_mask = mask
        if contrast_chunks > 0:  # only the first generated chunks: later ones also differ by their clean context
            c_mask = mask.clone()
            c_mask[:, pairs["context_frames"] + contrast_chunks * chunk:] = False
        c_loss = contrast_loss(x0_pred, x_clean, c_mask)
    return loss, c_loss, k_loss


def regression_and_keep(context_frames: int, regression_min_context: int) -> tuple[bool, bool]:
    """(regress onto the teacher, keep on the starting weights) for a batch whose pairs hold
    `context_frames` real latent frames: both (the keep loss wherever it is configured) when
    `regression_min_context` is 0, else one of them by the context's length."""
    if regression_min_context <= 0:
        return True, True
    regress = context_frames >= regression_min_context
    return regress, not regress


def combine_losses(cfg: ODEInitConfig, regress: bool, loss: torch.Tensor, c_loss: torch.Tensor | None, k_loss: torch.Tensor | None):
    """The weighted loss a batch trains on, and its logged scalars. `losses/ode_init` (the error
    against the teacher's results) is logged for every batch, but trained only when `regress`."""
    scalars = {"losses/ode_init": loss.item()}
    total = cfg.regression_weight * loss if regress else 0.0 * loss  # 0 * loss: every parameter still gets a gradient (DDP)
    if c_loss is not None:
        scalars["losses/ode_contrast"] = c_loss.item()
        total = total + cfg.contrast_weight * c_loss
    if k_loss is not None:
        scalars["losses/ode_keep"] = k_loss.item()
        total = total + cfg.keep_weight * k_loss
    return total, scalars


def train_ode_init(teacher: DiT, shards: list[dict], bank: PromptBank, schedule: FlowSchedule, cfg: ODEInitConfig, stage_dir, accelerator=None,
                   init_from: DiT | None = None) -> dict:
    """Regress a copy of the teacher (or of `init_from`, a warm start such as the shipped student) onto
    the ODE pairs (CausVid's student initialisation). Resumable."""
    runner = StageRunner(stage_dir, "ode init", cfg, accelerator)
    if runner.done:
        return {}
    student = copy.deepcopy(teacher if init_from is None else init_from).train()
    # the starting weights, copied before a resume overwrites them
    frozen = copy.deepcopy(student).eval().requires_grad_(False).to(runner.device) if cfg.keep_weight > 0 else None
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    runner.resume({"model": student}, {"opt": opt})
    model, opt = runner.prepare(student, opt)
    raw = runner.unwrap(model)
    plain, paired = contrast_shards(shards, False), contrast_shards(shards, True)
    use_contrast = cfg.contrast_weight > 0 and bool(paired)
    if cfg.contrast_weight > 0 and not paired:
        raise ValueError("ode_init.contrast_weight: the ODE pairs hold no contrast shards with a real context; generate them with "
                         "ode_pairs.num_contrast_pairs > 0 or set ode_init.contrast_weight=0")
    p_contrast = 1.0 if cfg.regression_weight == 0 else cfg.p_contrast

    def train_step(step: int, rng: np.random.Generator):
        contrast = use_contrast and rng.random() < p_contrast
        pairs = pair_batch(paired if contrast else (plain if use_contrast else shards), cfg.batch_size, rng)
        regress, anchor = regression_and_keep(int(pairs["context_frames"]), cfg.regression_min_context)
        loss, c_loss, k_loss = ode_pair_losses(model, raw, bank, schedule, pairs, rng, runner.device, cfg.context_noise_max,
                                               cfg.p_context_noise, cfg.contrast_chunks, frozen if anchor else None)
        loss, scalars = combine_losses(cfg, regress, loss, c_loss, k_loss)
        opt.zero_grad(set_to_none=True)
        runner.backward(loss)
        runner.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return scalars, {"loss": f"{scalars['losses/ode_init']:.4f}"}

    steps = runner.run(train_step)
    return runner.finish({"steps": steps}, lambda: raw.save_pretrained(runner.stage_dir / "model"))
