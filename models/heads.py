"""Reward and termination heads: per video frame, predicted from the clean latents of the latent
frame that holds it and the one before (so velocity is visible). Trained on real data."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.io import PretrainedMixin


@dataclass
class HeadsConfig:
    latent_channels: int = 8
    latent_height: int = 8
    latent_width: int = 12
    frames_per_latent: int = 4
    hidden: int = 64


class RewardTerminationHead(nn.Module, PretrainedMixin):
    config_class = HeadsConfig

    def __init__(self, config: HeadsConfig):
        super().__init__()
        self.config = cfg = config
        C, H = cfg.latent_channels, cfg.hidden
        self.net = nn.Sequential(
            nn.Conv2d(2 * C, H, 3, padding=1), nn.SiLU(),
            nn.Conv2d(H, H, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(H, H), nn.SiLU(),
            nn.Linear(H, 2 * cfg.frames_per_latent),
        )

    def forward(self, z: torch.Tensor, z_prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, C, T, h, w) clean latents; z_prev (B, C, 1, h, w) the latent frame before z[:, :, 0]
        (None at an episode start: z[:, :, 0] itself). Returns reward (B, T*F) and termination
        logits (B, T*F), one per video frame."""
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"z: expected latents (B, {self.config.latent_channels}, T, h, w), got {tuple(z.shape)}")
        B, C, T, h, w = z.shape
        prev = z[:, :, :1] if z_prev is None else z_prev
        zp = torch.cat([prev, z[:, :, :-1]], dim=2)  # (B, C, T, h, w): the latent frame before each
        pair = torch.cat([zp, z], dim=1).permute(0, 2, 1, 3, 4).reshape(B * T, 2 * C, h, w)  # time folded into batch
        out = self.net(pair).view(B, T, 2, self.config.frames_per_latent)
        reward = out[:, :, 0].reshape(B, T * self.config.frames_per_latent)
        term = out[:, :, 1].reshape(B, T * self.config.frames_per_latent)
        return reward, term


@dataclass
class StateHeadConfig(HeadsConfig):
    state_dim: int = 4
    state_mean: tuple = (0.0, 0.0, 0.0, 0.0)  # the training data's per-dimension statistics: targets are standardised
    state_std: tuple = (1.0, 1.0, 1.0, 1.0)


class StateHead(nn.Module, PretrainedMixin):
    """The simulator state (standardised) of each video frame, read off the one clean latent frame
    that holds it. Trained on real latents; frozen, it is the teacher's auxiliary action-effect
    loss (`distill.train_teacher`): the state read off the teacher's x0 prediction must be the
    real one, which weights the few latent values the pole occupies by what they mean."""
    config_class = StateHeadConfig

    def __init__(self, config: StateHeadConfig):
        super().__init__()
        self.config = cfg = config
        if len(cfg.state_mean) != cfg.state_dim or len(cfg.state_std) != cfg.state_dim:
            raise ValueError(f"StateHeadConfig: state_mean and state_std need state_dim={cfg.state_dim} values each")
        C, H = cfg.latent_channels, cfg.hidden
        h2, w2 = (cfg.latent_height + 1) // 2, (cfg.latent_width + 1) // 2
        self.net = nn.Sequential(  # no global pooling: the cart's position is where it is
            nn.Conv2d(C, H, 3, padding=1), nn.SiLU(),
            nn.Conv2d(H, H, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(H * h2 * w2, 2 * H), nn.SiLU(),
            nn.Linear(2 * H, cfg.frames_per_latent * cfg.state_dim),
        )
        self.register_buffer("mean", torch.tensor(cfg.state_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.state_std, dtype=torch.float32), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, T, h, w) latents -> standardised states (B, T * F, state_dim), one per video frame."""
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"z: expected latents (B, {self.config.latent_channels}, T, h, w), got {tuple(z.shape)}")
        B, C, T, h, w = z.shape
        out = self.net(z.permute(0, 2, 1, 3, 4).reshape(B * T, C, h, w))
        return out.view(B, T * self.config.frames_per_latent, self.config.state_dim)

    def standardise(self, states: torch.Tensor) -> torch.Tensor:
        """Simulator states (..., state_dim) -> the head's targets."""
        return (states - self.mean.to(states.device)) / self.std.to(states.device)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """-> states in simulator units (B, T * F, state_dim)."""
        return self(z) * self.std.to(z.device) + self.mean.to(z.device)
