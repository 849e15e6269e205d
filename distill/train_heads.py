"""Heads trained on real latents: reward and termination (MSE, BCE), and the state head (MSE on
standardised simulator states) that the teacher's auxiliary action-effect loss reads."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from distill.training_utils import StageRunner
from models.heads import HeadsConfig, RewardTerminationHead, StateHead, StateHeadConfig


@dataclass
class HeadsTrainConfig:
    steps: int = 1500
    batch_size: int = 64
    clip_latent_frames: int = 3
    lr: float = 1e-3
    term_pos_weight: float = 3.0  # terminations are the rarer class
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    heads: HeadsConfig = field(default_factory=HeadsConfig)


def stack_latents(clips: list[dict]) -> torch.Tensor:
    """Clips' latents (T, C, h, w) -> one batch (B, C, T, h, w)."""
    return torch.from_numpy(np.stack([c["latents"] for c in clips])).float().permute(0, 2, 1, 3, 4)


def heads_loss(head: RewardTerminationHead, clips: list[dict], pos_weight: float):
    z = stack_latents(clips)
    F_ = head.config.frames_per_latent
    reward = torch.from_numpy(np.stack([c["rewards"] for c in clips])).float()[:, F_:]
    term = torch.from_numpy(np.stack([c["terminated"] for c in clips])).float()[:, F_:]
    r_pred, t_logit = head(z[:, :, 1:], z[:, :, :1])  # the first latent frame only supplies the "before"
    loss_r = F.mse_loss(r_pred, reward)
    loss_t = F.binary_cross_entropy_with_logits(t_logit, term, pos_weight=torch.tensor(pos_weight))
    acc = ((t_logit > 0).float() == term).float().mean()
    return loss_r + loss_t, loss_r, loss_t, acc


def train_heads(dataset, cfg: HeadsTrainConfig, stage_dir) -> dict:
    """Train the heads on `dataset` (LatentClipDataset) in this process. Resumable; writes `stage_dir/model`."""
    runner = StageRunner(stage_dir, "heads", cfg, distributed=False)
    if runner.done:
        return {}
    head = RewardTerminationHead(cfg.heads)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr)
    runner.resume({"head": head}, {"opt": opt})
    last = {"term_acc": float("nan")}

    def train_step(step: int, rng: np.random.Generator):
        loss, lr_, lt, acc = heads_loss(head, dataset.sample(cfg.batch_size, cfg.clip_latent_frames, rng), cfg.term_pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last["term_acc"] = acc.item()
        return ({"losses/reward": lr_.item(), "losses/termination": lt.item(), "charts/termination_accuracy": acc.item()},
                {"loss": f"{loss.item():.4f}", "term_acc": f"{acc.item():.3f}"})

    steps = runner.run(train_step)
    return runner.finish({"steps": steps, "final_termination_accuracy": float(last["term_acc"])},
                         lambda: head.save_pretrained(runner.stage_dir / "model"))


@dataclass
class StateHeadTrainConfig:
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    stats_clips: int = 2048  # latent frames drawn once for the standardisation statistics
    seed: int = 0
    save_every: int = 200
    log_every: int = 25
    head: StateHeadConfig = field(default_factory=StateHeadConfig)


def state_head_batch(clips: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of latents and per-frame states -> latents (B, C, T, h, w), states (B, T * F, S)."""
    z = stack_latents(clips)
    s = torch.from_numpy(np.stack([np.asarray(c["states"], np.float32) for c in clips]))
    return z, s


def state_head_error(head: StateHead, clips: list[dict]) -> np.ndarray:
    """Root-mean-square error per state dimension, in simulator units, on `clips`."""
    z, s = state_head_batch(clips)
    with torch.no_grad():
        return (head.predict(z) - s).pow(2).mean(dim=(0, 1)).sqrt().numpy()


def train_state_head(dataset, cfg: StateHeadTrainConfig, stage_dir, heldout=None) -> dict:
    """Train the state head on `dataset` (a ClipSampler of real latents with states) in this process;
    `heldout` (a ClipSampler) gives the summary's error. Resumable; writes `stage_dir/model`."""
    runner = StageRunner(stage_dir, "state_head", cfg, distributed=False)
    if runner.done:
        return {}
    _, s = state_head_batch(dataset.sample(cfg.stats_clips, 1, np.random.default_rng([cfg.seed, 7])))
    flat = s.reshape(-1, s.shape[-1])
    head_cfg = dataclasses.replace(cfg.head, state_dim=flat.shape[1], state_mean=tuple(flat.mean(0).tolist()),
                                   state_std=tuple(flat.std(0).clamp(min=1e-6).tolist()))
    head = StateHead(head_cfg)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr)
    runner.resume({"head": head}, {"opt": opt})

    def train_step(step: int, rng: np.random.Generator):
        for g in opt.param_groups:  # cosine to 10%: the head is a frozen ruler afterwards
            g["lr"] = cfg.lr * (0.55 + 0.45 * np.cos(np.pi * step / max(1, cfg.steps)))
        z, s = state_head_batch(dataset.sample(cfg.batch_size, 1, rng))
        loss = F.mse_loss(head(z), head.standardise(s))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"losses/state": loss.item()}, {"loss": f"{loss.item():.4f}"}

    steps = runner.run(train_step)
    summary = {"steps": steps}
    if heldout is not None:
        err = state_head_error(head, heldout.sample(512, 1, np.random.default_rng([cfg.seed, 8])))
        summary["heldout_rmse"] = [float(e) for e in err]
        summary["heldout_rmse_in_std"] = [float(e / sd) for e, sd in zip(err, head_cfg.state_std)]
    return runner.finish(summary, lambda: head.save_pretrained(runner.stage_dir / "model"))
