"""The real simulator of a world: physics overrides, recolouring and downsampled frames.

:class:`Simulator` is shared by the real twin (:mod:`causvid_env.real_env`) and data
collection (:mod:`distill.collect`) so both see exactly the same frames:

1. ``gym.make(spec.env_id, render_mode="rgb_array").unwrapped`` (no TimeLimit or
   order-enforcing wrappers: episode bookkeeping is done by the callers);
2. the variant's ``physics`` overrides are set as attributes, then ``spec.physics_hook``;
3. each frame is the native render, recoloured with the variant's ``colors``
   (:func:`recolor`), then area-averaged to ``frame_height x frame_width``
   (:func:`downsample`, PIL ``BOX``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from causvid_env.worlds import RGB, Variant, WorldSpec, get_world

__all__ = ["Simulator", "apply_physics", "scaled_physics", "recolor", "downsample"]

_WHITE = np.array([255.0, 255.0, 255.0])


def downsample(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average an (h, w, 3) uint8 frame to (height, width, 3) uint8."""
    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame, dtype=np.uint8)
    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    return np.asarray(img.resize((width, height), Image.BOX), dtype=np.uint8)


def recolor(
    frame: np.ndarray, palette: dict[str, RGB], colors: dict[str, RGB], tol: float = 8.0
) -> np.ndarray:
    """Recolour named parts of a native render drawn on a white background.

    Every pixel that is a blend ``white - a * (white - palette[part])`` (``0 < a <= 1``,
    i.e. the part's colour or its anti-aliased edge over white) becomes
    ``white - a * (white - colors[part])``. Pixels matching several parts go to the one
    with the smallest residual. Deterministic, and a no-op when ``colors`` is empty.
    """
    if not colors:
        return frame
    # Only non-white pixels can change (a channel-wise AND is much faster than .min(-1)).
    ys, xs = np.nonzero((frame[..., 0] & frame[..., 1] & frame[..., 2]) != 255)
    d = _WHITE - frame[ys, xs].astype(np.float64)  # (P, 3) distance from white
    best_res = np.full(len(ys), np.inf)
    best_part = np.full(len(ys), -1)
    alphas = []
    parts = list(palette)
    for k, part in enumerate(parts):
        u = _WHITE - np.asarray(palette[part], dtype=np.float64)
        a = (d @ u) / float(u @ u)
        res = np.linalg.norm(d - a[:, None] * u, axis=-1)
        ok = (a > 0) & (a <= 1.0 + 1e-6) & (res < tol) & (res < best_res)
        best_res[ok] = res[ok]
        best_part[ok] = k
        alphas.append(a)
    out = frame.copy()
    for k, part in enumerate(parts):
        if part not in colors:
            continue
        m = best_part == k
        target = _WHITE - np.asarray(colors[part], dtype=np.float64)
        out[ys[m], xs[m]] = np.clip(np.rint(_WHITE - alphas[k][m][:, None] * target), 0, 255).astype(np.uint8)
    return out


def apply_physics(env: gym.Env, spec: WorldSpec, variant: Variant) -> None:
    """Set the variant's physics overrides on the unwrapped ``env``, then the world's hook."""
    base = env.unwrapped
    for key, value in variant.physics.items():
        if not hasattr(base, key):
            raise ValueError(
                f"variant {variant.name!r} of world {spec.name!r}: physics key {key!r} is not an "
                f"attribute of {type(base).__name__}"
            )
        setattr(base, key, value)
    if spec.physics_hook is not None:
        spec.physics_hook(base)


def scaled_physics(world: str | WorldSpec, scales: dict[str, float]) -> WorldSpec:
    """The world with physics constants scaled in every variant (``{"force_mag": 0.9}``: each
    variant pushes 0.9x as hard as it does now), e.g. to ask what a 10% weaker push costs an agent.
    The base value is the variant's override, else the simulator's own attribute."""
    spec = get_world(world)
    base = gym.make(spec.env_id, **spec.env_kwargs).unwrapped
    try:
        for key, scale in scales.items():
            if not hasattr(base, key):
                raise ValueError(f"scales: {key!r} is not a physics attribute of {type(base).__name__} (world {spec.name!r})")
            if not scale > 0:
                raise ValueError(f"scales: the scale of {key!r} must be > 0, got {scale}")
        variants = tuple(dataclasses.replace(v, physics={**v.physics, **{k: float(v.physics.get(k, getattr(base, k))) * s
                                                                          for k, s in scales.items()}})
                         for v in spec.variants)
    finally:
        base.close()
    return dataclasses.replace(spec, variants=variants)


def _offscreen_render(env: gym.Env) -> np.ndarray:
    """``env.render()`` in ``rgb_array`` mode without probing a real display.

    Gymnasium's classic-control envs initialise pygame's display on their first render even when
    they only draw to an off-screen surface; on a headless machine SDL then prints
    ``XDG_RUNTIME_DIR is invalid or not set``. Drawing needs no display, so while no pygame display
    is open the render runs under SDL's dummy drivers and the display is closed again afterwards:
    a window opened later in the process still gets the real driver.
    """
    try:
        import pygame
    except ImportError:  # pragma: no cover - the env's own render raises the install hint
        return env.render()
    if pygame.display.get_init():  # a window is open (the viewer): its driver is the right one
        return env.render()
    saved = {k: os.environ.get(k) for k in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER")}
    os.environ.update(SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    try:
        return env.render()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if pygame.display.get_init():
            pygame.display.quit()


class Simulator:
    """One real env of a world and variant, producing downsampled, recoloured frames.

    ``reset``/``step`` return ``(frame, state)`` / ``(frame, reward, terminated, state)``
    for a single simulator frame; ``state`` is ``env.unwrapped.state`` as float32.

    With ``run_on=True`` stepping past the standard termination is allowed silently, and
    each frame's reward and ``terminated`` flag are what the standard env would return
    for that transition (CartPole's "stepped after termination" bookkeeping is reset
    before each step).
    """

    def __init__(self, world: str | WorldSpec, variant: str | None = None) -> None:
        self.spec = get_world(world)
        self.variant = self.spec.variant(variant)
        self.env = gym.make(self.spec.env_id, render_mode="rgb_array", **self.spec.env_kwargs).unwrapped
        apply_physics(self.env, self.spec, self.variant)
        self.action_space = self.env.action_space

    @property
    def state(self) -> np.ndarray:
        return np.asarray(self.env.state, dtype=np.float32).copy()

    def set_state(self, state: np.ndarray) -> None:
        """Put the simulator in `state` (its full physical state, e.g. CartPole's x, x_dot, theta,
        theta_dot): branching from a saved state, drawing frames at given states. Call `reset` once
        before, since the env refuses to step before a reset."""
        self.env.state = np.asarray(state, dtype=np.float64).copy()
        if hasattr(self.env, "steps_beyond_terminated"):
            self.env.steps_beyond_terminated = None

    def render_frame(self) -> np.ndarray:
        """The current frame: native render, recoloured, downsampled; (H, W, 3) uint8."""
        frame = _offscreen_render(self.env)
        frame = recolor(frame, self.spec.palette, self.variant.colors)
        return downsample(frame, self.spec.frame_height, self.spec.frame_width)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        self.env.reset(seed=seed, options=options)
        return self.render_frame(), self.state

    def step(self, action: Any, run_on: bool = False):
        """Advance one frame with one (already validated) action."""
        if run_on and hasattr(self.env, "steps_beyond_terminated"):
            self.env.steps_beyond_terminated = None
        if isinstance(self.action_space, gym.spaces.Discrete):
            action = int(action)
        else:
            action = np.asarray(action, dtype=self.action_space.dtype).reshape(self.action_space.shape)
        _, reward, terminated, _, _ = self.env.step(action)
        return self.render_frame(), float(reward), bool(terminated), self.state

    def close(self) -> None:
        self.env.close()
