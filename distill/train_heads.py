"""Reward and termination heads trained on real latents (BCE for termination, MSE for reward)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from distill.training_utils import is_done, load_training_state, mark_done, save_training_state, seed_everything
from models.io import ScalarLogger
from models.heads import HeadsConfig, RewardTerminationHead


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


def heads_loss(head: RewardTerminationHead, clips: list[dict], pos_weight: float):
    z = torch.from_numpy(np.stack([c["latents"] for c in clips])).float().permute(0, 2, 1, 3, 4)  # (B, C, T, h, w)
    F_ = head.config.frames_per_latent
    reward = torch.from_numpy(np.stack([c["rewards"] for c in clips])).float()[:, F_:]
    term = torch.from_numpy(np.stack([c["terminated"] for c in clips])).float()[:, F_:]
    r_pred, t_logit = head(z[:, :, 1:], z[:, :, :1])  # the first latent frame only supplies the "before"
    loss_r = F.mse_loss(r_pred, reward)
    loss_t = F.binary_cross_entropy_with_logits(t_logit, term, pos_weight=torch.tensor(pos_weight))
    acc = ((t_logit > 0).float() == term).float().mean()
    return loss_r + loss_t, loss_r, loss_t, acc


def train_heads(dataset, cfg: HeadsTrainConfig, stage_dir) -> dict:
    stage_dir = Path(stage_dir)
    if is_done(stage_dir):
        return {}
    seed_everything(cfg.seed)
    head = RewardTerminationHead(cfg.heads)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr)
    step, _ = load_training_state(stage_dir, {"head": head}, {"opt": opt})
    log = ScalarLogger(stage_dir / "log.jsonl")
    bar = tqdm(total=cfg.steps, initial=step, desc="heads", dynamic_ncols=True)
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])  # per-step stream: a resumed run draws exactly what an uninterrupted one would
        loss, lr_, lt, acc = heads_loss(head, dataset.sample(cfg.batch_size, cfg.clip_latent_frames, rng), cfg.term_pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", term_acc=f"{acc.item():.3f}")
        if step % cfg.log_every == 0:
            log.log(step, **{"losses/reward": lr_.item(), "losses/termination": lt.item(), "charts/termination_accuracy": acc.item()})
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_training_state(stage_dir, step, {"head": head}, {"opt": opt})
    bar.close()
    head.save_pretrained(stage_dir / "model")
    summary = {"steps": step, "final_termination_accuracy": float(acc)}
    mark_done(stage_dir, summary)
    return summary
