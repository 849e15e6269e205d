"""Reference agents: random, keyboard (a human at the viewer), and a scripted CartPole oracle.

Every agent has ``act(obs, info=None) -> action`` for ONE observation (the batch-first
learned :class:`agents.policy.Policy` has ``act(obs_batch)``; ``agents.evaluate`` handles both).

    >>> agent = BalancingAgent()                  # reads info["state"], not the pixels
    >>> obs, info = RealWorldEnv("cartpole").reset(seed=0)
    >>> agent.act(obs, info)
    1
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from causvid_env.viewer.window import KeyMap
from causvid_env.worlds import WorldSpec, get_world

__all__ = ["RandomAgent", "KeyboardAgent", "BalancingAgent"]


class RandomAgent:
    """Uniformly random actions from ``action_space`` (seeded by ``seed``)."""

    def __init__(self, action_space: gym.Space, seed: int | None = None) -> None:
        if not isinstance(action_space, gym.Space):
            raise TypeError(f"action_space must be a gymnasium Space, got {type(action_space).__name__}")
        self.action_space = action_space
        self.action_space.seed(seed)

    def act(self, obs: Any = None, info: dict | None = None):
        return self.action_space.sample()


class KeyboardAgent(KeyMap):
    """Maps the currently pressed keys to an action with a world's ``keymap`` (the viewer's
    :class:`causvid_env.viewer.window.KeyMap`: the key listed last wins; with no mapped key
    pressed, ``null_action``, or the last action where it is ``None``).

    ``act()`` polls ``pygame.key.get_pressed()`` (the caller owns the pygame window and its
    event pump); :meth:`action_for` maps a set of key names and needs no pygame.
    """

    def __init__(self, keymap: dict[str, Any], null_action: Any = None) -> None:
        super().__init__(keymap, null_action)
        self._codes: dict[str, int] | None = None

    @classmethod
    def from_world(cls, world: str | WorldSpec) -> "KeyboardAgent":
        spec = get_world(world)
        return cls(spec.keymap, spec.null_action)

    def pressed_keys(self) -> list[str]:
        try:
            import pygame
        except ImportError as e:
            raise ImportError("KeyboardAgent needs pygame: pip install pygame-ce "
                              "(or pip install 'gymnasium[classic-control]')") from e
        if self._codes is None:
            try:
                self._codes = {name: pygame.key.key_code(name) for name in self.keymap}
            except ValueError as e:
                raise ValueError(f"keymap has a key name pygame does not know ({e}); use names like "
                                 "'left', 'a', 'space' (see pygame.key.name)") from e
        state = pygame.key.get_pressed()
        return [name for name, code in self._codes.items() if state[code]]

    def act(self, obs: Any = None, info: dict | None = None) -> Any:
        return self.action_for(self.pressed_keys())


class BalancingAgent:
    """Scripted CartPole controller on the TRUE state in ``info["state"]`` (an oracle reference).

    A linear state feedback ``push right iff k . (x, x_dot, theta, theta_dot) > 0`` decided
    once per chunk from the chunk's last state. It never looks at the pixels, so it checks
    the evaluator and the real twin (it survives the full 500 frames of the default
    variant); it cannot act in the dream, which has no true state.
    """

    def __init__(self, gains: tuple[float, float, float, float] = (0.3, 0.6, 12.0, 2.5)) -> None:
        # The pole terms dominate (keep it upright); the small cart terms pull the cart back
        # to the centre so it does not leave the track within 500 frames.
        self.gains = np.asarray(gains, dtype=np.float64)

    def act(self, obs: Any = None, info: dict | None = None) -> int:
        if info is None or "state" not in info:
            raise ValueError("BalancingAgent needs info['state'] from the real twin (RealWorldEnv); "
                             "the dream env has no true state")
        state = np.asarray(info["state"], dtype=np.float64)
        state = state[-1] if state.ndim == 2 else state  # (F, 4) per-frame states -> the latest
        return int(float(self.gains @ state) > 0.0)
