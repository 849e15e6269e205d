"""Flow-matching noise schedule: x_t = (1 - t) x_0 + t eps, t in [0, 1], with a timestep shift.

The network predicts the velocity v = eps - x_0, so x_0 = x_t - t v. The shift
t' = s t / (1 + (s - 1) t) spends more steps at high noise (public CausVid/Wan code: s = 5-8 for
large latents; our latents are tiny and nearly deterministic given the context, so the default
is a milder 3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# The paper's four student timesteps, as fractions of 1000 before the shift.
PAPER_STUDENT_STEPS = (999, 748, 502, 247)


@dataclass
class ScheduleConfig:
    shift: float = 3.0
    student_steps: tuple = PAPER_STUDENT_STEPS
    num_train_timesteps: int = 1000


class FlowSchedule:
    def __init__(self, cfg: ScheduleConfig | None = None):
        self.cfg = cfg or ScheduleConfig()

    def shift(self, u: torch.Tensor | float) -> torch.Tensor:
        s = self.cfg.shift
        u = torch.as_tensor(u, dtype=torch.float32)
        return s * u / (1 + (s - 1) * u)

    def student_timesteps(self) -> torch.Tensor:
        """The few-step student's noise levels, highest first (default 4)."""
        u = torch.tensor(self.cfg.student_steps, dtype=torch.float32) / self.cfg.num_train_timesteps
        return self.shift(u)

    def teacher_timesteps(self, num_steps: int, include: torch.Tensor | None = None) -> torch.Tensor:
        """Descending grid from 1 to 0 with `num_steps` intervals; `include` levels (the student's)
        are merged in so that the ODE passes through them exactly."""
        grid = self.shift(torch.linspace(1.0, 0.0, num_steps + 1))
        if include is not None:
            grid = torch.cat([grid, include.float()]).unique()
            grid = grid.sort(descending=True).values
        return grid

    def sample_train_t(self, shape, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        u = torch.rand(shape, generator=generator, device=device)
        return self.shift(u)

    @staticmethod
    def _b(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-frame t (B, T) -> broadcastable against latents (B, C, T, h, w)."""
        return t.reshape(t.shape[0], 1, t.shape[1], 1, 1)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tb = self._b(t, x0)
        return (1 - tb) * x0 + tb * eps

    def x0_from_v(self, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x_t - self._b(t, x_t) * v

    @staticmethod
    def v_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return eps - x0
