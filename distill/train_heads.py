"""Reward and termination heads trained on real latents (BCE for termination, MSE for reward)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from distill.training_utils import StageRunner
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
