"""Stage: train the causal video autoencoder (models/vae.py) on clips from a dataset.

Readable top to bottom: config -> model/optimiser (resumed if `stage_dir/state.pt` exists) ->
training loop (weighted reconstruction + small latent penalty) -> latent statistics ->
`stage_dir/vae` (save_pretrained) -> held-out PSNR/SSIM -> `stage_dir/DONE`.

Kill-safe: the full training state (model, optimiser, step, torch/numpy/python RNG and the data
generator) is written every `save_every` steps and at the end; re-running continues from it.
"""
# No `from __future__ import annotations`: config_from_dict needs real types to rebuild the nested
# VAEConfig from a dict.
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from distill.training_utils import StageRunner
from models.config_utils import config_to_dict
from models.io import ScalarLogger
from models.metrics import nonwhite_mask, psnr, ssim
from models.vae import CausalVAE, VAEConfig, frames_to_tensor, tensor_to_frames

SampleClips = Callable[[int, int, np.random.Generator], np.ndarray]


@dataclass
class VAETrainConfig:
    steps: int = 3000
    """optimiser steps"""
    batch_size: int = 16
    """clips per step"""
    clip_frames: int = 8
    """frames per clip; 8 = two latent frames, so the causal temporal convs see a real previous frame"""
    lr: float = 1e-3
    """peak AdamW learning rate (small conv net, batch 16: 1e-3 is stable with grad clipping)"""
    warmup_steps: int = 50
    """linear warm-up, then cosine decay to lr * min_lr_ratio"""
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    """no decay by default: the latent penalty already bounds the only scale the decoder could absorb"""
    grad_clip: float = 1.0
    """max global grad norm"""
    nonwhite_weight: float = 10.0
    """loss weight of non-white target pixels vs white background (CALIBRATION.md: 10x helped; the
    cart and the 1.6 px pole are a few % of the pixels and vanish otherwise)"""
    latent_penalty: float = 1e-4
    """weight of mean(z_raw^2)"""
    seed: int = 0
    save_every: int = 200
    """steps between resumable checkpoints (state.pt)"""
    log_every: int = 10
    """steps between log.jsonl records"""
    stats_clips: int = 256
    """clips encoded at the end to estimate the per-channel latent mean/std"""
    heldout_clips: int = 64
    """clips drawn (with a separate seed) for the held-out metrics when none are passed in"""
    eval_batch_size: int = 16
    device: str = "cpu"
    vae: VAEConfig = field(default_factory=VAEConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "clip_frames", "save_every", "log_every", "stats_clips",
                     "heldout_clips", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"VAETrainConfig.{name} must be a positive int, got {v!r}")
        if self.clip_frames % self.vae.temporal_down:
            raise ValueError(f"VAETrainConfig.clip_frames={self.clip_frames} must be a multiple of "
                             f"vae.temporal_down={self.vae.temporal_down}")
        if self.nonwhite_weight <= 0:
            raise ValueError(f"VAETrainConfig.nonwhite_weight must be positive, got {self.nonwhite_weight}")


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then cosine to lr * min_lr_ratio (`cfg`: lr, steps, warmup_steps, min_lr_ratio; the VAE
    stage and the decoder fine-tune)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _check_clips(clips, name: str, vae: VAEConfig, batch: int | None = None, frames: int | None = None) -> np.ndarray:
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 numpy array (B, T, H, W, 3), got "
                        f"{type(clips).__name__} {getattr(clips, 'dtype', '')}")
    H, W = vae.frame_height, vae.frame_width
    ok = clips.ndim == 5 and clips.shape[2:] == (H, W, 3) and clips.shape[1] % vae.temporal_down == 0
    ok = ok and (batch is None or clips.shape[0] == batch) and (frames is None or clips.shape[1] == frames)
    if not ok:
        want = f"({batch if batch else 'N'}, {frames if frames else 'T'}, {H}, {W}, 3)"
        raise ValueError(f"{name} must have shape {want} with T a multiple of {vae.temporal_down}, "
                         f"got {tuple(clips.shape)}")
    return clips


def pixel_weights(clips: np.ndarray, nonwhite_weight: float, device) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> loss weights (B, 1, T, H, W): nonwhite_weight on non-white pixels, else 1."""
    nw = torch.from_numpy(nonwhite_mask(clips)).to(device)  # (B, T, H, W)
    return (1.0 + (nonwhite_weight - 1.0) * nw.float()).unsqueeze(1)  # channel axis for broadcasting


@torch.no_grad()
def reconstruct(model: CausalVAE, clips: np.ndarray, batch_size: int, device) -> np.ndarray:
    """uint8 (N, T, H, W, 3) -> uint8 reconstructions, same shape."""
    out = []
    for i in range(0, len(clips), batch_size):
        x = frames_to_tensor(clips[i:i + batch_size], device)
        out.append(tensor_to_frames(model.decode(model.encode(x))))
    return np.concatenate(out)


@torch.no_grad()
def latent_stats(model: CausalVAE, sample_clips: SampleClips, cfg: VAETrainConfig, device) -> tuple[list, list]:
    """Per-channel mean/std of the raw latents over `cfg.stats_clips` fresh clips."""
    rng = np.random.default_rng(cfg.seed + 1)
    C = cfg.vae.latent_channels
    s, ss, n = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64), 0
    done = 0
    while done < cfg.stats_clips:
        b = min(cfg.eval_batch_size, cfg.stats_clips - done)
        clips = _check_clips(sample_clips(b, cfg.clip_frames, rng), "sample_clips(...)", cfg.vae, b, cfg.clip_frames)
        z = model.encode_raw(frames_to_tensor(clips, device)).double().cpu()  # (B, C, T', h, w)
        s += z.sum(dim=(0, 2, 3, 4))
        ss += z.pow(2).sum(dim=(0, 2, 3, 4))
        n += z.numel() // C
        done += b
    mean = s / n
    std = (ss / n - mean**2).clamp_min(1e-12).sqrt().clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def train_vae(sample_clips: SampleClips, cfg: VAETrainConfig, stage_dir, heldout_clips: np.ndarray | None = None) -> dict:
    """Train (or resume) the VAE stage in `stage_dir`; returns the summary written to `stage_dir/DONE`.

    sample_clips(batch_size, num_frames, rng) -> uint8 (B, T, H, W, 3) draws training clips.
    heldout_clips: uint8 (N, T, H, W, 3) for the final metrics (default: `cfg.heldout_clips` clips
    drawn from `sample_clips` with a separate seed -- fresh samples, but not a held-out split).
    """
    if not isinstance(cfg, VAETrainConfig):
        raise TypeError(f"cfg must be a VAETrainConfig, got {type(cfg).__name__}")
    if not callable(sample_clips):
        raise TypeError(f"sample_clips must be callable (batch_size, num_frames, rng) -> uint8 array, got {type(sample_clips).__name__}")
    if heldout_clips is not None:
        heldout_clips = _check_clips(heldout_clips, "heldout_clips", cfg.vae)
    runner = StageRunner(stage_dir, "vae", cfg, distributed=False, device=cfg.device, persistent_rng=True)
    stage_dir = runner.stage_dir
    if runner.done:
        return json.loads((stage_dir / "DONE").read_text() or "{}")
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / "train_config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))

    device = runner.device
    model = CausalVAE(dataclasses.replace(cfg.vae)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    resumed_from = runner.resume({"vae": model}, {"opt": opt})
    n_params = sum(p.numel() for p in model.parameters())

    def train_step(step: int, data_rng: np.random.Generator):
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        clips = _check_clips(sample_clips(cfg.batch_size, cfg.clip_frames, data_rng), "sample_clips(...)",
                             cfg.vae, cfg.batch_size, cfg.clip_frames)
        x = frames_to_tensor(clips, device)  # (B, 3, T, H, W)
        w = pixel_weights(clips, cfg.nonwhite_weight, device)  # (B, 1, T, H, W)
        x_hat, z = model(x)
        se = (x_hat - x).pow(2)
        recon = (w * se).mean() / w.mean()  # weighted MSE, normalised so its scale does not depend on content
        # A deterministic autoencoder can shrink or blow up its latents at no reconstruction cost
        # (the decoder rescales); a tiny L2 keeps them bounded and centred so the later
        # normalisation by per-channel mean/std is well conditioned for the diffusion model.
        lat = z.pow(2).mean()
        loss = recon + cfg.latent_penalty * lat
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = runner.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        mse = se.detach().mean().item()
        train_psnr = 10 * math.log10(4.0 / max(mse, 1e-12))  # pixels in [-1, 1]: peak-to-peak 2
        return ({"vae/loss": loss.item(), "vae/recon": recon.item(), "vae/latent_l2": lat.item(), "vae/psnr": train_psnr,
                 "vae/lr": lr, "vae/grad_norm": float(grad_norm)},
                {"loss": f"{loss.item():.4f}", "psnr": f"{train_psnr:.1f}"})

    model.train()
    t_start = time.time()
    step = runner.run(train_step)
    train_seconds = time.time() - t_start

    # ----- finish: latent statistics, export, held-out metrics -----------------------------------
    model.eval()
    mean, std = latent_stats(model, sample_clips, cfg, device)
    model.set_latent_stats(mean, std)
    model.save_pretrained(stage_dir / "vae")

    if heldout_clips is None:
        heldout_clips = _check_clips(sample_clips(cfg.heldout_clips, cfg.clip_frames, np.random.default_rng(cfg.seed + 2)),
                                     "sample_clips(...)", cfg.vae, cfg.heldout_clips, cfg.clip_frames)
    rec = reconstruct(model, heldout_clips, cfg.eval_batch_size, device)
    summary = {
        "steps": step,
        "resumed_from": resumed_from,
        "params": n_params,
        "train_seconds_this_run": round(train_seconds, 2),
        "heldout_psnr": psnr(heldout_clips, rec),
        "heldout_psnr_nonwhite": psnr(heldout_clips, rec, mask=nonwhite_mask(heldout_clips)),
        "heldout_ssim": ssim(heldout_clips, rec),
        "heldout_clips": int(len(heldout_clips)),
        "latent_mean": mean,
        "latent_std": std,
        "vae_dir": str(stage_dir / "vae"),
    }
    ScalarLogger(stage_dir / "log.jsonl").log(step, **{"eval/psnr": summary["heldout_psnr"], "eval/psnr_nonwhite": summary["heldout_psnr_nonwhite"],
                                                   "eval/ssim": summary["heldout_ssim"]})
    return runner.finish(summary)
