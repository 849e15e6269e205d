"""The state probe's network: a small CNN that reads the true simulator state back from ONE frame.

Its training, data and evaluation live in `evaluation.probe` (it is trained on real frames only); the
network sits here, beside the checkpoints that ship it (`checkpoints/<world>/probe/`), so that training
stages (`distill`, the physics-consistency loss) and evaluations load the same class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from causvid_env.worlds import get_world
from models.io import PretrainedMixin

__all__ = ["PROBE_TARGETS", "ProbeConfig", "StateProbe"]

# world -> [(name, state index, multiplier to reported units, sign under a horizontal flip)]
PROBE_TARGETS = {
    "cartpole": [("pole_angle_deg", 2, 180.0 / math.pi, -1.0), ("cart_x_m", 0, 1.0, -1.0)],
}


@dataclass
class ProbeConfig:
    world: str = "cartpole"
    frame_height: int = 64
    frame_width: int = 96
    target_names: tuple = ("pole_angle_deg", "cart_x_m")
    target_index: tuple = (2, 0)  # indices into the simulator state
    target_scale: tuple = (180.0 / math.pi, 1.0)  # state units -> reported units
    target_norm: tuple = (20.0, 1.0)  # reported units -> network outputs of order 1
    flip_sign: tuple = (-1.0, -1.0)  # how each target changes when the frame is mirrored left-right
    channels: tuple = (16, 32, 64)
    hidden: int = 128

    @classmethod
    def for_world(cls, world: str, **kw) -> "ProbeConfig":
        spec = get_world(world)
        if spec.name not in PROBE_TARGETS:
            raise ValueError(f"world: no probe targets are defined for world {spec.name!r}; known: {sorted(PROBE_TARGETS)}")
        t = PROBE_TARGETS[spec.name]
        return cls(world=spec.name, frame_height=spec.frame_height, frame_width=spec.frame_width,
                   target_names=tuple(x[0] for x in t), target_index=tuple(x[1] for x in t),
                   target_scale=tuple(x[2] for x in t), flip_sign=tuple(x[3] for x in t), **kw)


class StateProbe(nn.Module, PretrainedMixin):
    """Conv stack (two stride-2 stages, then stride 1) -> two readouts:
    a spatial soft-argmax (where is the object: the expected (column, row) of a learned heatmap,
    mapped linearly to the targets -- position generalises to places seen rarely in training) and
    global average+max pooling -> MLP (what does it look like: the pole angle, translation invariant).
    The two are summed."""

    config_class = ProbeConfig

    def __init__(self, config: ProbeConfig):
        super().__init__()
        self.config = cfg = config
        layers, cin = [], 3
        for i, c in enumerate(cfg.channels):
            layers += [nn.Conv2d(cin, c, 3, stride=2 if i < 2 else 1, padding=1), nn.SiLU()]
            cin = c
        self.convs = nn.Sequential(*layers)
        n = len(cfg.target_names)
        self.heatmap = nn.Conv2d(cin, 1, 1)
        self.where = nn.Linear(2, n)
        self.what = nn.Sequential(nn.Linear(2 * cin, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3, H, W) in [-1, 1] -> normalised targets (N, n_targets)."""
        f = self.convs(x)  # (N, C, h, w)
        N, C, h, w = f.shape
        att = self.heatmap(f).flatten(1).softmax(-1).view(N, h, w)  # (N, h, w) spatial distribution
        cols = torch.linspace(-1, 1, w, device=x.device)
        rows = torch.linspace(-1, 1, h, device=x.device)
        uv = torch.stack([(att.sum(1) * cols).sum(-1), (att.sum(2) * rows).sum(-1)], -1)  # (N, 2) expected column, row
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], -1)  # (N, 2C)
        return self.where(uv) + self.what(pooled)

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.config.frame_height, self.config.frame_width, 3):
            raise ValueError(f"frames: expected uint8 (N, {self.config.frame_height}, {self.config.frame_width}, 3), got "
                             f"{frames.dtype} {frames.shape}")
        dev = next(self.parameters()).device
        return torch.from_numpy(frames).to(dev).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (N, 3, H, W)

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """uint8 frames (N, H, W, 3) -> (N, n_targets) in reported units (degrees, metres)."""
        was = self.training
        self.eval()
        norm = torch.tensor(self.config.target_norm)
        out = [self(self._to_tensor(frames[i:i + batch_size])).cpu() * norm for i in range(0, len(frames), batch_size)]
        self.train(was)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.config.target_names)), np.float32)

    def targets(self, states: np.ndarray) -> np.ndarray:
        """Simulator states (N, state_dim) -> (N, n_targets) in reported units."""
        states = np.asarray(states, np.float64)
        return (states[:, list(self.config.target_index)] * np.asarray(self.config.target_scale)).astype(np.float32)
