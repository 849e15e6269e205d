"""Validation and conversion of what users pass to reset/step: images, clips, prompts, actions."""
from __future__ import annotations

from typing import Any

import numpy as np

from causvid_env.rendering import downsample
from causvid_env.worlds import WorldSpec, as_action_sequence
from models.text import validate_prompt


def to_image(image: Any, spec: WorldSpec, name: str = "image") -> np.ndarray:
    """Any HxWx3 (or HxWx4, or HxW grey) uint8 image -> (H, W, 3) at the world's frame size."""
    if isinstance(image, (str, bytes)) or not hasattr(image, "__array__") and not isinstance(image, (list, tuple)):
        raise TypeError(f"{name}: expected an HxWx3 uint8 array, got {type(image).__name__}")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name}: expected dtype uint8 (0..255), got {arr.dtype}; convert with (img * 255).astype(np.uint8) if it is in [0, 1]")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"{name}: expected an image of shape (H, W, 3), got {arr.shape}")
    return downsample(np.ascontiguousarray(arr[..., :3]), spec.frame_height, spec.frame_width)


def to_clip(frames: Any, spec: WorldSpec, name: str = "frames") -> np.ndarray:
    """A real clip (T, H, W, 3) uint8, T a positive multiple of the chunk length -> world size."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name}: expected dtype uint8, got {arr.dtype}")
    F = spec.frames_per_chunk
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0 or arr.shape[0] % F:
        raise ValueError(f"{name}: expected a clip (T, H, W, 3) with T a multiple of {F} frames, got {arr.shape}")
    return np.stack([to_image(f, spec, name) for f in arr])


def parse_step_input(value: Any, space, num_frames: int) -> tuple[np.ndarray | None, str | None, bool]:
    """step()'s argument -> (per-frame actions or None, new prompt or None, prompt_given)."""
    if isinstance(value, str):
        return None, validate_prompt(value, "action_or_prompt"), True
    if isinstance(value, dict):
        unknown = set(value) - {"action", "prompt"}
        if unknown:
            raise ValueError(f"action_or_prompt: unknown keys {sorted(unknown)}; use {{'action': ..., 'prompt': ...}}")
        if not value:
            raise ValueError("action_or_prompt: empty dict; give 'action' and/or 'prompt'")
        prompt = validate_prompt(value["prompt"], "action_or_prompt['prompt']") if "prompt" in value else None
        action = value.get("action")
        return (None if action is None else as_action_sequence(space, action, num_frames)), prompt, "prompt" in value
    if value is None:
        raise ValueError("action_or_prompt: got None; pass an action of action_space, a sequence of one action per frame, a prompt str, or {'action': ..., 'prompt': ...}")
    return as_action_sequence(space, value, num_frames), None, False
