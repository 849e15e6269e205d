"""Validation and conversion of what users pass to reset/step: images, clips, prompts, actions.

Images: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays (alpha is dropped, grey is repeated to
RGB) or PIL images, of any size. Accepted dtypes and how they are read:

    uint8            0..255
    uint16           0..65535 (16-bit images), scaled to 0..255
    float16/32/64    0..1, scaled to 0..255; values outside [0, 1] are refused (a float image in
                     0..255 is ambiguous: convert it yourself with np.clip(img, 0, 255).astype(np.uint8))

Anything else (bool, int64 from a nested list, ...) is refused with a TypeError naming the dtype.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np

from causvid_env.rendering import downsample
from causvid_env.worlds import WorldSpec
from models.actions import as_action_sequence
from models.text import validate_prompt

_IMAGE_HELP = ("pass an (H, W, 3) RGB image (or (H, W), (H, W, 1), (H, W, 4), or a PIL image) as uint8 in 0..255, "
               "uint16 in 0..65535 or float in [0, 1]")


def as_uint8_pixels(arr: np.ndarray, name: str) -> np.ndarray:
    """Pixel values of any accepted dtype (see the module docstring) -> uint8, same shape."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return np.rint(arr.astype(np.float32) / 257.0).astype(np.uint8)  # 65535 / 257 = 255
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{name}: the float image holds NaN or inf; {_IMAGE_HELP}")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: a float image must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; if it is "
                             "0..255, pass np.clip(img, 0, 255).astype(np.uint8) instead")
        return np.rint(arr * 255.0).astype(np.uint8)
    raise TypeError(f"{name}: unsupported dtype {arr.dtype}; {_IMAGE_HELP} (e.g. img.astype(np.uint8) if its values are 0..255)")


def _as_array(image: Any, name: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL comes with gymnasium/matplotlib
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.asarray(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
    if isinstance(image, (str, bytes)) or not (hasattr(image, "__array__") or isinstance(image, (list, tuple))):
        raise TypeError(f"{name}: expected an image array, got {type(image).__name__}; {_IMAGE_HELP}")
    return np.asarray(image)


def to_image(image: Any, spec: WorldSpec, name: str = "image") -> np.ndarray:
    """Any accepted image (module docstring) -> (H, W, 3) uint8 at the world's frame size."""
    arr = _as_array(image, name)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"{name}: expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")
    arr = as_uint8_pixels(arr, name)
    rgb = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3]  # grey -> RGB; alpha dropped
    return downsample(np.ascontiguousarray(rgb), spec.frame_height, spec.frame_width)


def to_clip(frames: Any, spec: WorldSpec, name: str = "frames") -> np.ndarray:
    """A real clip (T, H, W[, C]) of accepted images, T a positive multiple of the chunk length -> world size."""
    arr = np.asarray(frames) if not isinstance(frames, (list, tuple)) else np.stack([_as_array(f, name) for f in frames])
    F = spec.frames_per_chunk
    if arr.ndim not in (3, 4) or arr.shape[0] == 0 or arr.shape[0] % F:
        raise ValueError(f"{name}: expected a clip (T, H, W, 3) with T a positive multiple of {F} frames, got {arr.shape}")
    return np.stack([to_image(f, spec, name) for f in arr])


# -- prompts -------------------------------------------------------------------------------------
@contextmanager
def _no_progress_bars():
    """transformers draws a 'Loading weights' bar when MiniLM loads; an env reset should print nothing."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def quiet_text_encoder(engine):
    """The engine's text encoder, loaded (once per process) without progress bars."""
    with _no_progress_bars():
        return engine.text_encoder


def check_prompt(prompt: Any, text_encoder, name: str = "prompt") -> str:
    """`validate_prompt` plus the length limit: the text encoder reads at most `max_tokens` tokens
    (MiniLM: 32 with [CLS] and [SEP]) and would silently drop the rest, so a longer prompt is an error.
    Encoders without a `tokenizer` and `max_tokens` (custom prompt tables) are not length-checked."""
    prompt = validate_prompt(prompt, name)
    tokenizer, limit = getattr(text_encoder, "tokenizer", None), getattr(text_encoder, "max_tokens", None)
    if tokenizer is None or limit is None:
        return prompt
    tokens = tokenizer.tokenize(prompt)
    n = len(tokens) + tokenizer.num_special_tokens_to_add()
    if n > limit:
        raise ValueError(f"{name}: the prompt is {n} tokens long but the text encoder reads at most {limit} (about "
                         f"{int(limit * 0.7)} words); shorten it -- the model was trained on short descriptions like "
                         "'a long red pole on a black cart under low gravity'")
    unk = getattr(tokenizer, "unk_token", None)
    if unk is not None and unk in tokens:
        words = [w for w in prompt.split() if unk in tokenizer.tokenize(w)]
        warnings.warn(f"{name}: the text encoder cannot read {len(words)} word(s) of the prompt and sees them as {unk}: "
                      f"{', '.join(repr(w[:40]) for w in words[:5])}; use plain English words", UserWarning, stacklevel=3)
    return prompt


# -- step() ----------------------------------------------------------------------------------------
def parse_step_input(value: Any, space, num_frames: int, keymap: dict | None = None
                     ) -> tuple[np.ndarray | None, str | None, bool]:
    """step()'s argument -> (per-frame actions or None, new prompt (unchecked) or None, prompt_given).

    The rule: an action (or one per frame) of `space`, or a dict `{"action": ..., "prompt": ...}`
    (either key may be left out; no action is the null action). A plain str is refused: it would be
    ambiguous between a prompt and a key/action name such as "left"."""
    if isinstance(value, str):
        hint = ""
        key = value.strip().lower()
        if keymap and key in keymap:
            hint = f"{value!r} is a key of this world's keymap: pass its action, env.step({keymap[key]!r}). "
        raise ValueError(f"action_or_prompt: got the string {value!r}; step() takes an action of the action space "
                         f"({space}), not a string. {hint}To switch the prompt pass a dict: env.step({{'prompt': '...'}}) "
                         "(null action) or env.step({'action': 1, 'prompt': '...'})")
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
        raise ValueError("action_or_prompt: got None; pass an action of action_space, a sequence of one action per frame, "
                         "or {'action': ..., 'prompt': ...}")
    return as_action_sequence(space, value, num_frames), None, False
