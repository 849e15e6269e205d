"""The real twin: a world's real gymnasium env behind the same interface as the dream env.

One ``step`` is one chunk of ``F = spec.frames_per_chunk`` frames. ``reset`` returns the
*still chunk* (the initial frame repeated F times), the convention shared with the
dataset and the dream env. Observations are the world's downsampled, recoloured frames.

    >>> env = RealWorldEnv("cartpole", variant="long_red_low_gravity")
    >>> obs, info = env.reset(seed=0)          # (4, 64, 96, 3) uint8
    >>> obs, r, term, trunc, info = env.step(1) # push right for 4 frames
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import logger, spaces

from causvid_env.rendering import Simulator
from causvid_env.worlds import WorldSpec, get_world
from models.actions import as_action_sequence

__all__ = ["RealWorldEnv"]


class RealWorldEnv(gym.Env):
    """The real gymnasium env of a world, stepped one chunk at a time.

    Args:
        world: world name or :class:`WorldSpec`.
        variant: variant name (default: the world's default variant); ``reset`` may
            switch it with ``options={"variant": name}``.
        obs_mode: ``"chunk"`` -> obs is (F, H, W, 3); ``"last"`` -> the chunk's last frame.
        render_mode: ``None`` or ``"rgb_array"`` (the last frame).
        max_episode_frames: truncation length in frames (default: the world's standard).

    ``step`` info: ``state`` (F, state_dim) simulator state after each frame,
    ``frame_rewards`` (F,), ``frame_terminated`` (F,), ``frame_valid`` (F,) (False for
    frames padded after the episode ended), ``variant``, ``prompt``, ``frame`` (episode
    frame count). After termination (or truncation) inside a chunk the remaining frames
    repeat the last frame and state, with zero reward.
    """

    def __init__(
        self,
        world: str | WorldSpec = "cartpole",
        variant: str | None = None,
        obs_mode: str = "chunk",
        render_mode: str | None = None,
        max_episode_frames: int | None = None,
    ) -> None:
        self.world = get_world(world)
        spec = self.world
        if obs_mode not in ("chunk", "last"):
            raise ValueError(f"obs_mode must be 'chunk' or 'last', got {obs_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_episode_frames is not None and int(max_episode_frames) <= 0:
            raise ValueError(f"max_episode_frames must be a positive integer, got {max_episode_frames!r}")
        self.variant_name = spec.variant(variant).name
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.max_episode_frames = int(max_episode_frames or spec.max_episode_frames)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": spec.fps}
        self.frames_per_chunk = spec.frames_per_chunk
        shape = spec.frame_shape if obs_mode == "last" else (self.frames_per_chunk, *spec.frame_shape)
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spec.make_action_space()
        self._sim: Simulator | None = None
        self._last_frame: np.ndarray | None = None
        self._frame_count = 0
        self._done = False
        self._warned_done = False

    # ------------------------------------------------------------------ helpers
    @property
    def variant(self):
        return self.world.variant(self.variant_name)

    def _obs(self, frames: np.ndarray) -> np.ndarray:
        return frames[-1].copy() if self.obs_mode == "last" else frames

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        variant = self.world.variant(options.pop("variant", self.variant_name)).name
        sim_seed = seed
        if self._sim is None or variant != self.variant_name:
            if self._sim is not None:
                self._sim.close()
            self.variant_name = variant
            self._sim = Simulator(self.world, variant)
            if sim_seed is None:  # a fresh simulator must still follow this env's seeding
                sim_seed = int(self.np_random.integers(2**31 - 1))
        frame, state = self._sim.reset(seed=sim_seed, options=options or None)
        self._last_frame = frame
        self._frame_count = 0
        self._done = False
        self._warned_done = False
        F = self.frames_per_chunk
        frames = np.repeat(frame[None], F, axis=0)
        info = {
            "state": np.repeat(state[None], F, axis=0),
            "variant": self.variant_name,
            "prompt": self.variant.prompt,
            "frame": 0,
        }
        return self._obs(frames), info

    def step(self, action: Any):
        if self._sim is None:
            raise gym.error.ResetNeeded("Cannot call step() before reset(); call env.reset() first.")
        F = self.frames_per_chunk
        actions = as_action_sequence(self.action_space, action, F)
        if self._done and not self._warned_done:
            logger.warn(
                "You are calling 'step()' even though this environment has already returned "
                "terminated = True or truncated = True. You should always call 'reset()' once you "
                "receive 'terminated = True' or 'truncated = True' -- any further steps are "
                "undefined behavior."
            )
            self._warned_done = True
        frames, states = [], []
        rewards = np.zeros(F, np.float32)
        term_flags = np.zeros(F, bool)
        valid = np.zeros(F, bool)
        terminated = truncated = False
        frame, state = self._last_frame, self._sim.state
        for i in range(F):
            if not (terminated or truncated):
                frame, reward, term, state = self._sim.step(actions[i], run_on=self._done)
                self._frame_count += 1
                rewards[i], term_flags[i], valid[i] = reward, term, True
                terminated = term
                truncated = not term and self._frame_count >= self.max_episode_frames
            else:
                term_flags[i] = terminated
            frames.append(frame)
            states.append(state)
        self._last_frame = frame
        self._done = self._done or terminated or truncated
        frames = np.stack(frames)
        info = {
            "state": np.stack(states),
            "frame_rewards": rewards,
            "frame_terminated": term_flags,
            "frame_valid": valid,
            "variant": self.variant_name,
            "prompt": self.variant.prompt,
            "frame": self._frame_count,
        }
        return self._obs(frames), float(rewards.sum()), bool(terminated), bool(truncated), info

    def render(self):
        if self.render_mode is None:
            logger.warn("render() called with render_mode=None; create the env with render_mode='rgb_array'.")
            return None
        if self._last_frame is None:
            raise gym.error.ResetNeeded("Cannot call render() before reset(); call env.reset() first.")
        return self._last_frame.copy()

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None
