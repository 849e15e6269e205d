"""Action spaces: the one JSON schema, the one validation path, and encoders for any gymnasium space.

`space_to_dict` / `space_from_dict` are the only serialisation of an action space (checkpoints'
config.json, policies' policy.json); `as_action_sequence` is the only check of user actions
against a space (the envs, the real twin, the restyler and `ActionCodec` all go through it).

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


# Spellings written by older files (agents' policy.json before the schemas were merged): read, never written.
_LEGACY_TYPES = {"discrete": "Discrete", "box": "Box"}


def space_from_dict(d: dict) -> spaces.Space:
    """The space `space_to_dict` described (also reads the legacy lowercase `"discrete"` / `"box"`)."""
    kind = _LEGACY_TYPES.get(d.get("type"), d.get("type"))
    if kind == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d.get("start", 0)))
    if kind == "Box":
        shape = tuple(d["shape"])
        return spaces.Box(np.array(d["low"], np.float32).reshape(shape), np.array(d["high"], np.float32).reshape(shape), dtype=np.float32)
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"]))
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    raise ValueError(f"action_space: unknown space type {d.get('type')!r} in config; expected Discrete, Box, MultiDiscrete or MultiBinary")


def as_action_sequence(space: spaces.Space, action: Any, num_frames: int, name: str = "action") -> np.ndarray:
    """Validate ``action`` and return one action per frame, shape ``(num_frames, *space.shape)``.

    ``action`` is either a single action of ``space`` (held for all frames) or a sequence of
    ``num_frames`` actions. Raises ``ValueError`` naming ``name`` otherwise. Discrete (ints;
    returns int64), Box (returns the space's dtype; a plain number is accepted for a one-element
    Box), MultiDiscrete and MultiBinary (ints; return int64 / int8).
    """
    if isinstance(space, spaces.Discrete):
        arr = np.asarray(action)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_):
            raise ValueError(
                f"{name} must be an integer (or a sequence of {num_frames} integers) for "
                f"{space}, got {action!r} of type {type(action).__name__}"
            )
        if arr.ndim == 0:
            arr = np.full((num_frames,), int(arr), dtype=np.int64)
        elif arr.shape != (num_frames,):
            raise ValueError(
                f"{name} must be a single integer or a sequence of exactly {num_frames} "
                f"integers (one per frame), got shape {arr.shape}"
            )
        arr = arr.astype(np.int64)
        lo, hi = int(space.start), int(space.start + space.n - 1)
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise ValueError(f"{name} values must lie in [{lo}, {hi}] for {space}, got {action!r}")
        return arr

    if isinstance(space, spaces.Box):
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be numeric with shape {space.shape} or "
                f"({num_frames}, *{space.shape}) for {space}, got {action!r}"
            ) from None
        arr = _per_frame(arr, tuple(space.shape), num_frames, name, scalar_ok=tuple(space.shape) == (1,))
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {action!r}")
        if np.any(arr < space.low) or np.any(arr > space.high):
            raise ValueError(
                f"{name} must lie in [{space.low.tolist()}, {space.high.tolist()}], got {action!r}"
            )
        return np.array(arr, dtype=space.dtype)

    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        arr = np.asarray(action)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} must be integers for {space}, got {action!r} of type {type(action).__name__}")
        arr = _per_frame(arr, tuple(space.shape), num_frames, name)
        high = np.asarray(space.nvec) if isinstance(space, spaces.MultiDiscrete) else 2
        if np.any(arr < 0) or np.any(arr >= high):
            raise ValueError(f"{name} values outside {space}, got {action!r}")
        return arr.astype(space.dtype)

    raise ValueError(f"{name}: unsupported action space {space}; use Discrete, Box, MultiDiscrete or MultiBinary")


def _per_frame(arr: np.ndarray, shape: tuple, num_frames: int, name: str, scalar_ok: bool = False) -> np.ndarray:
    """A held action (`shape`) broadcast to every frame, or `num_frames` actions as they are."""
    if arr.ndim == 0 and scalar_ok:
        arr = arr.reshape(1)
    if arr.shape == shape:
        return np.broadcast_to(arr, (num_frames, *shape))
    if arr.shape != (num_frames, *shape):
        raise ValueError(
            f"{name} must have shape {shape} (held for the chunk) or "
            f"{(num_frames, *shape)} (one per frame), got shape {arr.shape}"
        )
    return arr


class ActionCodec:
    """Turns validated actions of a space into float features (no parameters)."""

    def __init__(self, space_dict: dict):
        self.space_dict = space_dict
        self.space = space_from_dict(space_dict)
        self.kind = kind = type(self.space).__name__
        if kind == "Discrete":
            self.feature_dim = int(self.space.n)
        elif kind == "Box":
            self.feature_dim = int(np.prod(self.space.shape))
        elif kind == "MultiDiscrete":
            self.feature_dim = int(np.sum(self.space.nvec))
        else:
            self.feature_dim = int(self.space.n)
        self.action_shape = () if kind == "Discrete" else tuple(self.space.shape)

    def to_features(self, actions: Any, name: str = "action") -> np.ndarray:
        """(N, *action_shape) raw actions -> (N, feature_dim) float32, checked by `as_action_sequence`
        (a ValueError naming `name`)."""
        arr = np.asarray(actions)
        if arr.dtype == object or arr.ndim != 1 + len(self.action_shape) or arr.shape[1:] != self.action_shape:
            raise ValueError(f"{name}: expected shape (N, *{self.action_shape}) for {self.space}, got {arr.shape}")
        arr = as_action_sequence(self.space, arr, arr.shape[0], name)
        if self.kind == "Discrete":
            return np.eye(self.space.n, dtype=np.float32)[arr - int(self.space.start)]
        if self.kind == "Box":
            low = np.asarray(self.space.low, np.float64)
            high = np.asarray(self.space.high, np.float64)
            a = arr.astype(np.float64)
            finite = np.isfinite(low) & np.isfinite(high)
            scaled = np.where(finite, 2 * (a - low) / np.where(finite, high - low, 1) - 1, a)
            return scaled.reshape(arr.shape[0], -1).astype(np.float32)
        if self.kind == "MultiDiscrete":
            flat = arr.reshape(arr.shape[0], -1)
            return np.concatenate([np.eye(k, dtype=np.float32)[flat[:, i]] for i, k in enumerate(np.asarray(self.space.nvec).reshape(-1))], axis=1)
        return arr.reshape(arr.shape[0], -1).astype(np.float32)

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
