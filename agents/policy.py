"""The pixel policy PPO trains, and how it is saved and loaded, apart from the training script.

An observation is a short clip, ``(T, H, W, 3)`` uint8 (time first), in one of two layouts
(``PolicyConfig.obs_mode`` / ``frame_stack``, both of which the dream env can produce):

- ``obs_mode="chunk"``, ``frame_stack=1``: the env's chunk of ``F`` frames (``T = F``);
- ``obs_mode="last"``, ``frame_stack=k``: the last frame of each of the last ``k`` chunks
  (``T = k``; :class:`agents.observations.VectorFrameStack` / gymnasium's
  ``FrameStackObservation`` over an env made with ``obs_mode="last"``).

The network keeps the rows ``crop_rows``, turns the clip into ``T`` grayscale (or ``3T`` RGB)
channels of "ink" (1 - brightness), average-pools it by ``downsample`` (rows, columns), and
encodes it (``encoder``) for an MLP trunk shared by an actor head (a categorical over
``Discrete`` actions or a diagonal Gaussian over ``Box`` actions) and a critic head:

- ``"cnn"``: a small strided CNN (cleanrl's Atari agent, smaller);
- ``"rows"``: :class:`RowProfile`, parameter-free: each row's ink centre (a soft-argmax over
  the columns) and ink mass, per frame. A thin object's position and lean become numbers the
  trunk reads directly (CartPole's pole: the centres of its rows; its angular velocity: their
  change across the stacked frames), which a CNN must otherwise learn from the reward alone;
- ``"rows_rel"``: the same, each frame's centres taken relative to its median centre (the
  pole's lean apart from the cart's position), plus that median (the cart);
- ``"pose"``: :class:`PoseProfile`, parameter-free: per frame two numbers, the cart's column
  (the ink centre of the heavy rows) and the pole's lean (the slope of the thin rows' centres
  against the row), with their differences and second differences across the stacked frames
  (velocity), and the pushes of the last chunks read from the cart's curvature. 16 features for
  4 frames instead of 184.

    >>> policy = load_policy("runs/ppo_dream")          # policy.json + policy.safetensors
    >>> actions = policy.act(obs_batch)                 # (B, F, H, W, 3) uint8 -> (B,) int64
    >>> policy.act(obs)                                 # one (F, H, W, 3) chunk -> one action

Files: ``policy.json`` holds ``{"format": ..., "config": PolicyConfig, "info": {...}}`` and
``policy.safetensors`` the weights; ``load_policy`` rebuilds the network from the config.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as Fn
from safetensors.torch import save_file

from causvid_env.checkpoint import default_checkpoint_dir
from models.actions import space_from_dict
from models.config_utils import config_from_dict
from models.io import load_weights_into, read_json

__all__ = ["PolicyConfig", "Policy", "PoseProfile", "RowProfile", "load_policy", "shipped_policy_dir"]

FORMAT = "causvid-agents/policy-1"
CONFIG_NAME = "policy.json"
WEIGHTS_NAME = "policy.safetensors"
ROW_ENCODERS = ("rows", "rows_rel", "pose")


# ----------------------------------------------------------------------------- network


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a :class:`Policy`.

    Attributes:
        obs_shape: one observation, ``(T, H, W, 3)`` (a chunk or a frame stack) or ``(H, W, 3)``
            (one last frame).
        action_space: a Discrete or Box space as ``models.actions.space_to_dict`` writes it.
        obs_mode: the ``obs_mode`` of the env the policy reads (``"chunk"`` or ``"last"``).
        frame_stack: how many consecutive observations are stacked along time (1: none);
            more than 1 needs ``obs_mode="last"`` (a stack of last frames, ``T = frame_stack``).
        crop_rows: ``(top, bottom)`` rows kept before anything else (``()``: all rows).
        grayscale: average the colour channels (T channels instead of 3T). CartPole's
            variants differ in colour, so gray also makes the policy indifferent to them.
        downsample: average-pool factor applied before the CNN, ``(rows, columns)`` or one
            factor for both (64x96 -> 32x48 at 2; ``(2, 1)`` keeps the full width, where
            CartPole's 1-pixel pole shows its angle).
        encoder: ``"cnn"`` (strided convolutions), ``"rows"`` (:class:`RowProfile`),
            ``"rows_rel"`` (the row centres relative to each frame's median centre) or
            ``"pose"`` (:class:`PoseProfile`: the cart's column and the pole's lean per frame).
        channels: output channels of the strided convolutions (each halves H and W; ``cnn`` only).
        hidden: width of the shared fully connected layer(s): one ReLU layer after the CNN,
            two tanh layers after the row profile (cleanrl's MLP agent).
        init_log_std: initial log standard deviation of the Gaussian head (Box actions only).
    """

    obs_shape: tuple[int, ...] = (4, 64, 96, 3)
    action_space: dict = field(default_factory=lambda: {"type": "Discrete", "n": 2, "start": 0})
    obs_mode: str = "chunk"
    frame_stack: int = 1
    crop_rows: tuple[int, ...] = ()
    grayscale: bool = True
    downsample: int | tuple[int, ...] = 2
    encoder: str = "cnn"
    channels: tuple[int, ...] = (16, 32, 32)
    hidden: int = 128
    init_log_std: float = -0.5

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(s) for s in self.obs_shape)
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.obs_shape) not in (3, 4) or self.obs_shape[-1] != 3:
            raise ValueError(f"obs_shape must be (F, H, W, 3) or (H, W, 3), got {self.obs_shape}")
        ds = (self.downsample,) if isinstance(self.downsample, int) else tuple(self.downsample)
        if len(ds) == 1:
            ds = ds * 2
        if len(ds) != 2 or any(int(d) < 1 for d in ds):
            raise ValueError(f"downsample must be a positive integer or (rows, columns), got {self.downsample!r}")
        self.downsample = tuple(int(d) for d in ds)
        self.crop_rows = tuple(int(r) for r in self.crop_rows)
        H = self.obs_shape[-3]
        if self.crop_rows and (len(self.crop_rows) != 2 or not 0 <= self.crop_rows[0] < self.crop_rows[1] <= H):
            raise ValueError(f"crop_rows must be () or (top, bottom) with 0 <= top < bottom <= {H}, got {self.crop_rows}")
        if self.obs_mode not in ("chunk", "last"):
            raise ValueError(f"obs_mode must be 'chunk' or 'last', got {self.obs_mode!r}")
        if int(self.frame_stack) < 1 or (self.frame_stack > 1 and self.obs_mode != "last"):
            raise ValueError(f"frame_stack must be 1, or more with obs_mode='last'; got {self.frame_stack!r} "
                             f"with obs_mode={self.obs_mode!r}")
        expected = len(self.obs_shape) == 4 if (self.obs_mode == "chunk" or self.frame_stack > 1) else len(self.obs_shape) == 3
        if not expected or (self.frame_stack > 1 and self.obs_shape[0] != self.frame_stack):
            raise ValueError(f"obs_shape {self.obs_shape} does not match obs_mode={self.obs_mode!r}, "
                             f"frame_stack={self.frame_stack}: expected (F, H, W, 3) for chunks, "
                             "(frame_stack, H, W, 3) for stacked last frames, (H, W, 3) for one last frame")
        if self.encoder not in ("cnn", *ROW_ENCODERS):
            raise ValueError(f"encoder must be 'cnn', 'rows', 'rows_rel' or 'pose', got {self.encoder!r}")
        if self.encoder in ROW_ENCODERS and not self.grayscale:
            raise ValueError(f"encoder={self.encoder!r} reads one ink channel per frame: it needs grayscale=True")
        if self.encoder == "cnn" and not self.channels:
            raise ValueError("channels must name at least one convolution")
        if not isinstance(space_from_dict(self.action_space), (gym.spaces.Discrete, gym.spaces.Box)):  # also validates
            raise ValueError(f"action_space must be Discrete or Box, got {self.action_space}")


def batched_obs(obs: Any, shape, device: torch.device | str = "cpu") -> tuple[torch.Tensor, bool]:
    """One observation of ``shape`` or a batch ``(B, *shape)`` -> ``(batch tensor, whether it was one)``; any other
    shape is a ValueError that names it."""
    x = torch.as_tensor(np.asarray(obs), device=device)
    shape = tuple(shape)
    single = tuple(x.shape) == shape
    if single:
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"obs must have shape {shape} or (B, *{shape}), got {tuple(x.shape)}")
    return x, single


def layer_init(layer: nn.Module, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Module:
    """cleanrl's orthogonal init: sqrt(2) for ReLU trunks, 0.01 for the actor (near-uniform
    initial policy), 1 for the critic."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class RowProfile(nn.Module):
    """``(B, C, H, W)`` ink, C frames oldest first -> ``(B, (C + 1) * H)`` features, no weights:
    the latest frame's row centres (the mean column weighted by ink, in pixels from the middle;
    0 for an empty row), each older frame's row centres minus the latest's (the motion), and the
    latest frame's ``log(1 + row ink mass)``. A running mean and variance (``update`` during
    training, saved with the weights) standardise them: the pole's motion is a fraction of a
    pixel a chunk, the cart's position tens of pixels."""

    def __init__(self, n_features: int, relative: bool = False) -> None:
        super().__init__()
        self.relative = relative
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("var", torch.ones(n_features))
        self.register_buffer("count", torch.zeros(()))

    @staticmethod
    def n_features(frames: int, rows: int, relative: bool = False) -> int:
        return (frames + 1) * rows + (frames if relative else 0)

    @staticmethod
    def raw(x: torch.Tensor, relative: bool = False) -> torch.Tensor:
        """``relative`` (``encoder="rows_rel"``): each frame's row centres are taken relative to
        that frame's median centre over its inked rows, which joins the features (latest, and
        older minus latest). CartPole: every row's centre then no longer moves with the cart
        (~9 px std), so the pole's lean (a few px) is no longer a small difference of large,
        correlated inputs; the cart's position and velocity are the median's two features."""
        cols = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) - (x.shape[-1] - 1) / 2
        mass = x.sum(-1)  # (B, C, H)
        centre = (x * cols).sum(-1) / (mass + 1e-2)  # (B, C, H); the 1e-2 keeps empty rows at 0
        if relative:
            inked = mass > 0.05
            ref = torch.nan_to_num(torch.where(inked, centre, torch.nan).nanmedian(-1).values)  # (B, C); 0 if blank
            centre = torch.where(inked, centre - ref[..., None], torch.zeros_like(centre))
        latest = centre[:, -1:]  # (B, 1, H)
        motion = centre[:, :-1] - latest  # (B, C-1, H)
        out = [latest.flatten(1), motion.flatten(1), torch.log1p(mass[:, -1])]
        if relative:
            out += [ref[:, -1:], ref[:, :-1] - ref[:, -1:]]
        return torch.cat(out, dim=1)  # (B, n_features)

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw(x, self.relative)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch of preprocessed observations into the running statistics (Chan et al.)."""
        f = self._raw(x)
        n, m, v = f.shape[0], f.mean(0), f.var(0, unbiased=False)
        total = self.count + n
        delta = m - self.mean
        self.var.copy_((self.var * self.count + v * n + delta ** 2 * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.fill_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self._raw(x) - self.mean) / (self.var + 1e-4).sqrt()).clamp(-10.0, 10.0)


class PoseProfile(RowProfile):
    """``(B, C, H, W)`` ink -> ``(B, 6C - 8)`` features (C > 1), no weights: per frame the cart's
    column and the pole's lean, the latest of each, their C - 1 differences between consecutive
    frames and C - 2 second differences, and the pushes read from the cart's second differences
    (below); standardised like :class:`RowProfile`.

    The cart's column is the ink centre of the heavy rows (``CART_INK < ink < W / 6`` pixels:
    the cart's block; the full-width track line and the thin pole are out), the lean the slope
    (pixels per row, positive to the right going up) of the thin rows' centres (``ink <=
    CART_INK``, weighted by their ink up to 1) fitted against the row. CartPole with 4-frame
    chunks: a linear fit of these 8 per-frame numbers gives x and theta with R^2 > 0.99. The
    velocities are where the policy needs more than a difference: the action held over the
    last chunk changes them by about as much as their spread (the chunk's mean velocity, which
    the positions give, is not its final one), and shows only as a curvature of the positions.
    CartPole's Euler steps make the cart's second difference over two chunks
    ``tau^2 (10 a_prev + 6 a_last)`` (``a``: +-force/mass): ~ +-1.2 px when both pushes agree,
    ~ +-0.3 px when they differ, with the earlier push's sign. So ``push_prev = tanh(dd / 0.15)``
    and ``push_last = push_prev * tanh((|dd| - 0.85) / 0.15)`` (+-1: right, left) decode both
    pushes (99.7% right for the last one, default CartPole past the first three chunks); with
    them a linear fit explains 0.90 / 0.86 of x_dot / theta_dot instead of 0.64 / 0.49. The
    0.85 px is default CartPole's (force 10 N, 20 px/m, 4-frame chunks). At a reset the stack
    is padded (the reset frame repeated: identical consecutive frames); the pushes across the
    padding are read from rest (no earlier push), see :meth:`raw`."""

    CART_INK = 2.0  # pixels of ink a row: the pole's rows hold ~0.7, the cart's 3-8, the track ~19
    PUSH_PX, PUSH_SOFT = 0.85, 0.15  # the cart's second difference between one and two pushes; softness
    PAD_MODE = "rest"  # the reset's padded frames: "rest" (below), "unknown" (0) or "none" (read as real)

    def __init__(self, frames: int) -> None:
        super().__init__(self.n_features(frames))

    @staticmethod
    def n_features(frames: int, rows: int = 0, relative: bool = False) -> int:
        # latest + C-1 differences + C-2 second differences, of both; 2 pushes per second difference
        return 2 * max(2 * frames - 2, 1) + 2 * max(frames - 2, 0)

    @staticmethod
    def pose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` ink -> the cart's column (pixels from the middle) and the pole's
        lean (pixels per row), each ``(B, C)``; 0 where a frame shows no cart or no pole."""
        W = x.shape[-1]
        cols = torch.arange(W, device=x.device, dtype=x.dtype) - (W - 1) / 2
        rows = torch.arange(x.shape[-2], device=x.device, dtype=x.dtype)
        mass, moment = x.sum(-1), (x * cols).sum(-1)  # (B, C, H)
        centre = moment / (mass + 1e-2)
        is_cart = ((mass > PoseProfile.CART_INK) & (mass < W / 6)).to(x.dtype)
        cart = (is_cart * moment).sum(-1) / ((is_cart * mass).sum(-1) + 1e-6)  # the cart rows' ink centre
        pole_w = torch.where((mass > 0.05) & (mass <= PoseProfile.CART_INK), mass.clamp(max=1.0), torch.zeros_like(mass))
        n = pole_w.sum(-1, keepdim=True) + 1e-6
        dr = rows - (pole_w * rows).sum(-1, keepdim=True) / n  # (B, C, H): row minus the pole's mean row
        dc = centre - (pole_w * centre).sum(-1, keepdim=True) / n
        lean = -(pole_w * dr * dc).sum(-1) / ((pole_w * dr * dr).sum(-1) + 1e-6)  # rows count downwards
        return cart, lean

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw(x)

    @staticmethod
    def padded(x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` ink -> ``(B, C - 1)`` bool: frame ``i + 1`` is exactly frame ``i``.

        That is the stack's padding at a reset (the reset frame repeated, gymnasium's
        ``FrameStackObservation(padding_type="reset")`` and :class:`VectorFrameStack`); a real
        chunk never leaves the cart and pole exactly where they were (a 10 N push changes the
        cart's velocity by ~0.7 m/s a chunk), so it is a signal of the frames alone."""
        return (x[:, 1:] == x[:, :-1]).flatten(2).all(-1)

    @staticmethod
    def raw(x: torch.Tensor, relative: bool = False) -> torch.Tensor:
        """The features; at a reset (:meth:`padded` frames) the pushes are read from rest.

        The padding's differences are 0, which is about right (a reset's velocities are at
        most 0.05 m/s and rad/s: < 0.1 px a chunk), so the second difference across the first
        real chunk is the curvature from rest, ``6 tau^2 a_last`` (~ +-0.44 px): one push.
        Decoded as two chunks' pushes it read as an earlier push with the last one's sign and
        the last one reversed (the shipped policy's start failures, seed 0 after 11 frames). So
        there (``PAD_MODE="rest"``) ``push_prev = 0`` (there was none) and ``push_last =
        tanh(dd / 0.15)``; second differences across two padded differences are 0, pushes 0.
        ``PAD_MODE="unknown"`` zeroes every second difference and push involving the padding
        (tried: it does not help the shipped policy); ``"none"`` is the encoder before this."""
        out = []
        known = ~PoseProfile.padded(x)  # (B, C-1): differences between two distinct frames
        both = (known[:, 1:] & known[:, :-1]).to(x.dtype)  # (B, C-2): second differences of them
        first = (known[:, 1:] & ~known[:, :-1]).to(x.dtype)  # across the padding's last difference
        mode = PoseProfile.PAD_MODE
        if mode not in ("rest", "unknown", "none"):
            raise ValueError(f"PoseProfile.PAD_MODE must be 'rest', 'unknown' or 'none', got {mode!r}")
        keep = {"rest": both + first, "unknown": both, "none": torch.ones_like(both)}[mode]
        for p in PoseProfile.pose(x):  # (B, C), oldest first
            d = p[:, 1:] - p[:, :-1]  # (B, C-1): newest last (0 between padded, identical frames)
            out += [p[:, -1:], d, (d[:, 1:] - d[:, :-1]) * keep]
        dd = out[2]  # the cart's second differences (B, C-2)
        push_prev = torch.tanh(dd / PoseProfile.PUSH_SOFT)
        push_last = push_prev * torch.tanh((dd.abs() - PoseProfile.PUSH_PX) / PoseProfile.PUSH_SOFT)
        if mode == "rest":  # from rest: no earlier push, and dd = 6 tau^2 a_last
            push_last = both * push_last + first * push_prev
            push_prev = both * push_prev
        return torch.cat(out + [push_prev, push_last], dim=1)


class Policy(nn.Module):
    """Actor-critic CNN over one chunk of frames; see the module docstring."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.config = cfg
        self.action_space = space_from_dict(cfg.action_space)
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        frames = cfg.obs_shape[0] if len(cfg.obs_shape) == 4 else 1
        H, W = cfg.obs_shape[-3], cfg.obs_shape[-2]
        if cfg.crop_rows:
            H = cfg.crop_rows[1] - cfg.crop_rows[0]
        c_in = frames * (1 if cfg.grayscale else 3)
        if cfg.encoder == "pose":
            self.cnn = PoseProfile(c_in)
        elif cfg.encoder in ROW_ENCODERS:
            rel = cfg.encoder == "rows_rel"
            self.cnn = RowProfile(RowProfile.n_features(c_in, H // cfg.downsample[0], rel), relative=rel)
        else:
            convs, c = [], c_in
            for i, c_out in enumerate(cfg.channels):
                k = 5 if i == 0 else 3  # a wider first kernel sees the thin pole across two pixels
                convs += [layer_init(nn.Conv2d(c, c_out, k, stride=2, padding=k // 2)), nn.ReLU()]
                c = c_out
            self.cnn = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, c_in, H // cfg.downsample[0], W // cfg.downsample[1])).shape[1]
        if cfg.encoder in ROW_ENCODERS:
            # cleanrl's ppo.py MLP agent: separate actor and critic trunks, so that the critic's
            # large early value errors do not reshape the features the actor reads
            def mlp():
                return nn.Sequential(layer_init(nn.Linear(n_flat, cfg.hidden)), nn.Tanh(),
                                     layer_init(nn.Linear(cfg.hidden, cfg.hidden)), nn.Tanh())
            self.trunk, self.critic_trunk = mlp(), mlp()
        else:  # the Atari agent: one trunk for both heads
            self.trunk = nn.Sequential(layer_init(nn.Linear(n_flat, cfg.hidden)), nn.ReLU())
            self.critic_trunk = nn.Identity()
        if self.discrete:
            self.actor = layer_init(nn.Linear(cfg.hidden, int(self.action_space.n)), std=0.01)
        else:
            n_act = int(np.prod(self.action_space.shape))
            self.actor = layer_init(nn.Linear(cfg.hidden, n_act), std=0.01)
            self.log_std = nn.Parameter(torch.full((n_act,), float(cfg.init_log_std)))
            # Gaussian mean lives in [-1, 1]; scale to the Box bounds when acting.
            low = torch.as_tensor(self.action_space.low, dtype=torch.float32).flatten()
            high = torch.as_tensor(self.action_space.high, dtype=torch.float32).flatten()
            self.register_buffer("act_center", (high + low) / 2, persistent=False)
            self.register_buffer("act_scale", (high - low) / 2, persistent=False)
        self.critic = layer_init(nn.Linear(cfg.hidden, 1), std=1.0)

    # ---------------------------------------------------------------- forward
    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, H, W, 3)`` (or ``(B, H, W, 3)``) -> float ``(B, C, H'/dy, W/dx)``."""
        cfg = self.config
        if obs.dim() == 4:
            obs = obs.unsqueeze(1)  # a single frame is a clip of one
        if cfg.crop_rows:
            obs = obs[:, :, cfg.crop_rows[0]:cfg.crop_rows[1]]  # (B, T, H', W, 3)
        B, T, H, W, _ = obs.shape
        # "Ink" = 1 - brightness: the white background becomes 0 so the convs see only objects.
        x = 1.0 - obs.float() / 255.0  # (B, T, H, W, 3)
        if cfg.grayscale:
            x = x.mean(-1, keepdim=True)  # (B, T, H, W, 1)
        x = x.permute(0, 1, 4, 2, 3).reshape(B, -1, H, W)  # (B, T*C, H, W): time stacked on channels
        if cfg.downsample != (1, 1):
            x = Fn.avg_pool2d(x, cfg.downsample)
        return x

    def update_normalizer(self, obs: torch.Tensor) -> None:
        """Training: fold a batch of observations into the ``rows`` encoder's feature statistics
        (a no-op for the CNN)."""
        if isinstance(self.cnn, RowProfile):
            self.cnn.update(self.preprocess(obs))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.preprocess(obs))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor's hidden features."""
        return self.trunk(self.encode(obs))

    def _value(self, encoded: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The critic reads the actor's hidden features (CNN) or has its own trunk (rows)."""
        if isinstance(self.critic_trunk, nn.Identity):
            h = self.trunk(encoded) if hidden is None else hidden
        else:
            h = self.critic_trunk(encoded)
        return self.critic(h).squeeze(-1)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._value(self.encode(obs))

    def distribution(self, hidden: torch.Tensor) -> torch.distributions.Distribution:
        if self.discrete:
            return torch.distributions.Categorical(logits=self.actor(hidden))
        mean = self.actor(hidden)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """PPO's call: ``(action, log_prob, entropy, value)``. Discrete actions are indices
        ``0..n-1`` (add ``action_space.start`` for the env, see :meth:`to_env_action`); Box
        actions are raw Gaussian samples in normalised units (see :meth:`to_env_action`)."""
        enc = self.encode(obs)
        hidden = self.trunk(enc)
        dist = self.distribution(hidden)
        if action is None:
            action = dist.sample()
        logp, ent = dist.log_prob(action), dist.entropy()
        if not self.discrete:  # independent dims: sum over the action vector
            logp, ent = logp.sum(-1), ent.sum(-1)
        return action, logp, ent, self._value(enc, hidden)

    def to_env_action(self, action: torch.Tensor) -> np.ndarray:
        """Network action -> actions of ``action_space`` (batch first)."""
        if self.discrete:
            return action.cpu().numpy().astype(np.int64) + int(self.action_space.start)
        a = action.clamp(-1.0, 1.0) * self.act_scale + self.act_center
        return a.cpu().numpy().astype(self.action_space.dtype).reshape(-1, *self.action_space.shape)

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch ``(B, *obs_shape)`` or one observation ``obs_shape`` of uint8 frames.

        ``deterministic`` takes the most likely action (the Gaussian mean); otherwise samples.
        """
        x, single = batched_obs(obs, self.config.obs_shape, self.critic.weight.device)
        dist = self.distribution(self.features(x))
        if deterministic:
            a = dist.probs.argmax(-1) if self.discrete else dist.mean
        else:
            a = dist.sample()
        out = self.to_env_action(a)
        return out[0] if single else out

    # ---------------------------------------------------------------- I/O
    def save(self, directory: str | os.PathLike, info: dict | None = None) -> Path:
        """Write ``policy.json`` (config + ``info``) and ``policy.safetensors`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT})
        cfg = asdict(self.config)
        meta = {"format": FORMAT, "config": cfg, "info": info or {}}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def from_config(cls, cfg: PolicyConfig | dict) -> "Policy":
        if isinstance(cfg, dict):
            cfg = config_from_dict(PolicyConfig, cfg, where="PolicyConfig")
        return cls(cfg)


def load_policy(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Policy:
    """Rebuild a :class:`Policy` from ``policy.json`` + ``policy.safetensors`` in ``directory``."""
    directory = Path(directory)
    meta_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(f"load_policy: {meta_path} is missing; pass the --out directory of "
                                "`python -m agents.ppo` (it holds policy.json and policy.safetensors)")
    if not weights_path.is_file():
        raise FileNotFoundError(f"load_policy: {weights_path} is missing; the policy directory has a config but no weights")
    meta = read_json(meta_path, "load_policy: ")
    if meta.get("format") != FORMAT:
        raise ValueError(f"load_policy: {meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    policy = Policy.from_config(config_from_dict(PolicyConfig, meta["config"], where=str(meta_path)))
    load_weights_into(policy, weights_path)  # corrupt file, missing/unexpected keys, shapes: ValueError naming the file
    policy.info = meta.get("info", {})
    return policy.to(device).eval()


def shipped_policy_dir(world: str = "cartpole") -> Path:
    """Where the package ships a world's trained policy: ``causvid_env/checkpoints/<world>/policy``
    (next to the world model; ``python -m agents.evaluate --policy shipped``)."""
    return default_checkpoint_dir(world) / "policy"
