"""What an agent sees: frame stacks over the dream's or the real twin's ``obs_mode="last"`` frames.

A single still frame cannot show velocity, and CartPole is not solvable without it. Both the
dream (``CausVidEnv`` / ``CausVidVectorEnv``) and the real twin (``RealWorldEnv``) offer
``obs_mode="last"`` (each chunk's last frame, one decision per chunk, the action held for the
chunk); stacking the last ``k`` of those gives ``(k, H, W, 3)`` observations with the motion of
the last ``k - 1`` chunks, the same in the dream and in the real world:

    >>> envs = VectorFrameStack(CausVidVectorEnv(8, obs_mode="last"), 4)     # (8, 4, 64, 96, 3)
    >>> env = stack_frames(RealWorldEnv("cartpole", obs_mode="last"), 4)     # (4, 64, 96, 3)

At a reset the stack holds the reset frame ``k`` times (gymnasium's ``FrameStackObservation``
with ``padding_type="reset"``, which :func:`stack_frames` uses for single envs and
:class:`VectorFrameStack` reproduces for vector envs, in every autoreset mode).

:class:`LastFrameRealEnv` is ``RealWorldEnv(obs_mode="last")`` rendering only the frame it
returns: rendering (pygame at 600x400, recolour, area-downsample, ~2 ms a frame) is most of
a real step, so this is ~3x the steps per second for training on the real twin.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import FrameStackObservation

from causvid_env.real_env import RealWorldEnv
from causvid_env.worlds import WorldSpec

__all__ = ["LastFrameRealEnv", "VectorFrameStack", "stack_frames", "stacked_space"]


def stacked_space(frame_space: spaces.Box, k: int) -> spaces.Box:
    """``Box(0, 255, (H, W, 3))`` -> ``Box(0, 255, (k, H, W, 3))`` (time first)."""
    if not (isinstance(frame_space, spaces.Box) and frame_space.dtype == np.uint8 and len(frame_space.shape) == 3):
        raise ValueError(f"frame stacking needs single (H, W, 3) uint8 frames (an env made with obs_mode='last'), "
                         f"got {frame_space}")
    if int(k) < 1:
        raise ValueError(f"frame_stack must be >= 1, got {k!r}")
    return spaces.Box(0, 255, (int(k), *frame_space.shape), np.uint8)


def stack_frames(env: gym.Env, k: int) -> gym.Env:
    """One env's ``obs_mode="last"`` frames stacked ``k`` deep (``k == 1``: the env unchanged)."""
    stacked_space(env.observation_space, k)  # the checks
    return env if k == 1 else FrameStackObservation(env, k, padding_type="reset")


class VectorFrameStack(VectorWrapper):
    """The last ``k`` observations of each sub-env of a vector env of ``(H, W, 3)`` frames.

    Matches :func:`stack_frames` on each sub-env in all of Gymnasium 1.x's autoreset modes:
    NEXT_STEP (the dream's): the step after an episode end starts a fresh stack from its reset
    frame; SAME_STEP: ``infos["final_obs"]`` becomes the finished episode's last stack;
    DISABLED: ``reset(options={"reset_mask": m})`` refills only the envs in ``m``.
    """

    def __init__(self, env: VectorEnv, k: int) -> None:
        super().__init__(env)
        self.k = int(k)
        self.single_observation_space = stacked_space(env.single_observation_space, k)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        self._stack = np.zeros(self.observation_space.shape, np.uint8)  # (N, k, H, W, 3)
        self._autoreset = np.zeros(self.num_envs, bool)

    def _push(self, stack: np.ndarray, frame: np.ndarray) -> np.ndarray:
        return np.concatenate([stack[1:], frame[None]], axis=0)  # (k, H, W, 3): oldest first

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, bool)), bool)
        self._stack[mask] = np.repeat(np.asarray(obs)[mask][:, None], self.k, axis=1)
        self._autoreset[mask] = False
        return self._stack.copy(), info

    def step(self, actions):
        obs, reward, term, trunc, info = self.env.step(actions)
        obs, done = np.asarray(obs), np.asarray(term, bool) | np.asarray(trunc, bool)
        for i in range(self.num_envs):
            if self.mode == AutoresetMode.NEXT_STEP and self._autoreset[i]:
                self._stack[i] = np.repeat(obs[i][None], self.k, axis=0)  # a new episode's reset frame
            elif self.mode == AutoresetMode.SAME_STEP and done[i]:
                info["final_obs"][i] = self._push(self._stack[i], np.asarray(info["final_obs"][i]))
                self._stack[i] = np.repeat(obs[i][None], self.k, axis=0)
            else:
                self._stack[i] = self._push(self._stack[i], obs[i])
        self._autoreset = done
        return self._stack.copy(), reward, term, trunc, info


def _no_frame_like(frame: np.ndarray):
    return lambda: frame


class LastFrameRealEnv(RealWorldEnv):
    """``RealWorldEnv(obs_mode="last")`` that renders only each chunk's last frame.

    Same observations, rewards, episode ends and infos as ``RealWorldEnv(world, variant,
    obs_mode="last", max_episode_frames=...)`` (tests/test_agents.py compares them step by step):
    the physics runs frame by frame, the simulator draws once per chunk (after the chunk's last
    frame, or after its terminal frame, which is the same state).
    """

    def __init__(self, world: str | WorldSpec = "cartpole", variant: str | None = None,
                 max_episode_frames: int | None = None) -> None:
        super().__init__(world, variant=variant, obs_mode="last", max_episode_frames=max_episode_frames)

    def step(self, action: Any):
        if self._sim is None or self._done:  # before reset / past the end: the twin's own errors and padding
            return super().step(action)
        sim = self._sim
        # the frames in between are never shown: the simulator's per-frame render returns the last frame drawn
        sim.render_frame = _no_frame_like(self._last_frame)
        try:
            _, reward, terminated, truncated, info = super().step(action)
        finally:
            del sim.render_frame  # back to the class's method
        self._last_frame = sim.render_frame()
        return self._last_frame.copy(), reward, terminated, truncated, info
