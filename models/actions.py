"""Action encoders built from any gymnasium space.

Every space is first turned into a flat float *feature vector* per frame (one-hot for Discrete,
concatenated one-hots for MultiDiscrete, bits for MultiBinary, [-1, 1]-normalised values for Box),
so one small network serves every kind. A learned null embedding replaces the features where an
action is absent: the still chunk after a reset, prompt-only steps, and the unconditional branch
of classifier-free guidance (like DiT's extra "null label" row).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn


def space_to_dict(space: spaces.Space) -> dict:
    """JSON-serialisable description of a gymnasium action space (stored in config.json)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "low": np.asarray(space.low, dtype=np.float64).reshape(-1).tolist(),
            "high": np.asarray(space.high, dtype=np.float64).reshape(-1).tolist(),
        }
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).reshape(-1).tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": int(np.prod(space.shape))}
    raise TypeError(
        f"action_space: unsupported gymnasium space {type(space).__name__}; "
        "use Discrete, Box, MultiDiscrete or MultiBinary"
    )


def space_from_dict(d: dict) -> spaces.Space:
    kind = d.get("type")
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "Box":
        shape = tuple(d["shape"])
        return spaces.Box(np.array(d["low"], np.float32).reshape(shape), np.array(d["high"], np.float32).reshape(shape), dtype=np.float32)
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"]))
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    raise ValueError(f"action_space: unknown space type {kind!r} in config")


class ActionCodec:
    """Validates raw actions of a space and turns them into float features (no parameters)."""

    def __init__(self, space_dict: dict):
        self.space_dict = space_dict
        self.space = space_from_dict(space_dict)
        kind = space_dict["type"]
        if kind == "Discrete":
            self.feature_dim = int(space_dict["n"])
        elif kind == "Box":
            self.feature_dim = int(np.prod(space_dict["shape"]))
        elif kind == "MultiDiscrete":
            self.feature_dim = int(sum(space_dict["nvec"]))
        else:
            self.feature_dim = int(space_dict["n"])
        self.kind = kind
        self.action_shape = () if kind == "Discrete" else tuple(self.space.shape)

    def to_features(self, actions: Any, name: str = "action") -> np.ndarray:
        """(N, *action_shape) raw actions -> (N, feature_dim) float32. Raises ValueError naming `name`."""
        arr = np.asarray(actions)
        if arr.dtype == object:
            raise TypeError(f"{name}: expected numbers of {self.space}, got {actions!r}")
        n = arr.shape[0] if arr.ndim > len(self.action_shape) else None
        if n is None or arr.shape[1:] != self.action_shape:
            raise ValueError(f"{name}: expected shape (N, *{self.action_shape}) for {self.space}, got {arr.shape}")
        if self.kind == "Discrete":
            if not np.issubdtype(arr.dtype, np.integer):
                if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
                    arr = arr.astype(np.int64)
                else:
                    raise TypeError(f"{name}: Discrete actions must be integers, got dtype {arr.dtype}")
            start, n_act = self.space_dict.get("start", 0), self.space_dict["n"]
            idx = arr.astype(np.int64) - start
            if idx.min(initial=0) < 0 or idx.max(initial=0) >= n_act:
                raise ValueError(f"{name}: values {np.unique(arr).tolist()} outside {self.space}; use integers in [{start}, {start + n_act - 1}]")
            return np.eye(n_act, dtype=np.float32)[idx]
        if self.kind == "Box":
            if not np.issubdtype(arr.dtype, np.number):
                raise TypeError(f"{name}: Box actions must be numbers, got dtype {arr.dtype}")
            low = np.asarray(self.space.low, np.float64)
            high = np.asarray(self.space.high, np.float64)
            a = arr.astype(np.float64)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name}: contains NaN or inf")
            if np.any(a < low - 1e-6) or np.any(a > high + 1e-6):
                raise ValueError(f"{name}: values outside {self.space} (low {low.tolist()}, high {high.tolist()})")
            finite = np.isfinite(low) & np.isfinite(high)
            scaled = np.where(finite, 2 * (a - low) / np.where(finite, high - low, 1) - 1, a)
            return scaled.reshape(arr.shape[0], -1).astype(np.float32)
        if self.kind == "MultiDiscrete":
            nvec = np.asarray(self.space_dict["nvec"])
            if not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name}: MultiDiscrete actions must be integers, got dtype {arr.dtype}")
            flat = arr.reshape(arr.shape[0], -1)
            if np.any(flat < 0) or np.any(flat >= nvec[None]):
                raise ValueError(f"{name}: values outside {self.space}")
            return np.concatenate([np.eye(k, dtype=np.float32)[flat[:, i]] for i, k in enumerate(nvec)], axis=1)
        flat = arr.reshape(arr.shape[0], -1)
        if not np.all((flat == 0) | (flat == 1)):
            raise ValueError(f"{name}: MultiBinary actions must be 0 or 1")
        return flat.astype(np.float32)

    def null_features(self, n: int) -> np.ndarray:
        return np.zeros((n, self.feature_dim), np.float32)


class ActionEncoder(nn.Module):
    """Per-latent-frame action embedding: the actions of the `frames_per_latent` frames a latent
    frame covers, each embedded (or replaced by the learned null), concatenated, then an MLP."""

    def __init__(self, space_dict: dict, frames_per_latent: int, embed_dim: int, out_dim: int):
        super().__init__()
        self.codec = ActionCodec(space_dict)
        self.frames_per_latent = frames_per_latent
        self.frame_embed = nn.Linear(self.codec.feature_dim, embed_dim)
        self.null = nn.Parameter(torch.randn(embed_dim) / math.sqrt(embed_dim))
        self.mlp = nn.Sequential(nn.Linear(frames_per_latent * embed_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, features: torch.Tensor, null_mask: torch.Tensor) -> torch.Tensor:
        """features (B, T*F, A) float, null_mask (B, T*F) bool (True = no action) -> (B, T, out_dim)."""
        B, TF, _ = features.shape
        assert TF % self.frames_per_latent == 0, "per-frame actions must cover whole latent frames"
        e = self.frame_embed(features)  # (B, T*F, E)
        e = torch.where(null_mask[..., None], self.null.to(e.dtype).expand_as(e), e)
        e = e.reshape(B, TF // self.frames_per_latent, -1)  # (B, T, F*E): frames of one latent frame side by side
        return self.mlp(e)
