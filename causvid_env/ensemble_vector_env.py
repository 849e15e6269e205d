"""DreamEnsembleVectorEnv: several world models as one vector env, each stepping its share of the envs.

An agent trained in one dream can learn to exploit that dream's particular errors; trained in an
ensemble of dreams (different checkpoints of the same world) it meets each model's errors only in
its share of the episodes, so a policy has to work in all of them (the model-ensemble idea of
ME-TRPO and MBPO, here as whole dreams). The envs are shared in blocks: with ``num_envs = 16``
and two checkpoints, envs 0-7 dream with the first and 8-15 with the second.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from causvid_env.vector_env import CausVidVectorEnv


def split_counts(num_envs: int, members: int) -> list[int]:
    """Envs per member, as equal as they go (the first members take the remainder): 16, 3 -> [6, 5, 5]."""
    if members < 1:
        raise ValueError(f"checkpoints: need at least one, got {members}")
    if num_envs < members:
        raise ValueError(f"num_envs: {num_envs} envs cannot be shared among {members} checkpoints (one env each at least); "
                         f"raise num_envs or pass fewer checkpoints")
    base, extra = divmod(num_envs, members)
    return [base + (j < extra) for j in range(members)]


class DreamEnsembleVectorEnv(VectorEnv):
    """``num_envs`` dreams shared among the world models of ``checkpoints`` (``split_counts``), each
    member a :class:`CausVidVectorEnv` stepped in its own batched forward.

    The interface is ``CausVidVectorEnv``'s: the same spaces, NEXT_STEP autoreset, ``reset(seed,
    options)`` with per-env lists or one value for all, ``reset_options_fn(env_index, rng)`` with the
    ensemble's env index. Every other keyword goes to each member. ``member_of[i]`` is the index of
    the checkpoint env ``i`` dreams with; infos carry it as ``"member"``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, checkpoints: Sequence[str | Path], *,
                 reset_options_fn: Callable[[int, np.random.Generator], dict] | None = None, **kwargs: Any):
        if isinstance(checkpoints, (str, Path)) or not len(checkpoints):
            raise ValueError(f"checkpoints: expected a non-empty list of checkpoint directories, got {checkpoints!r}")
        counts = split_counts(int(num_envs), len(checkpoints))
        ends = np.cumsum(counts)
        self.slices = [slice(int(e - n), int(e)) for e, n in zip(ends, counts)]  # member j steps envs slices[j]
        self.members: list[CausVidVectorEnv] = []
        for ckpt, n, s in zip(checkpoints, counts, self.slices):
            fn = None
            if reset_options_fn is not None:
                fn = (lambda i, rng, o=s.start: reset_options_fn(o + i, rng))
            self.members.append(CausVidVectorEnv(n, checkpoint=ckpt, reset_options_fn=fn, **kwargs))
        first = self.members[0]
        for j, m in enumerate(self.members[1:], 1):
            if m.single_observation_space != first.single_observation_space or m.single_action_space != first.single_action_space:
                raise ValueError(f"checkpoints: {checkpoints[j]!r} dreams a different world than {checkpoints[0]!r} "
                                 f"(spaces {m.single_observation_space}, {m.single_action_space} vs "
                                 f"{first.single_observation_space}, {first.single_action_space})")
        self.checkpoints = [str(c) for c in checkpoints]
        self.num_envs = int(num_envs)
        self.member_of = np.repeat(np.arange(len(counts)), counts)
        self.world, self.F, self.render_mode = first.world, first.F, first.render_mode
        self.metadata = dict(first.metadata)
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def _merge(self, results: list[tuple]) -> tuple:
        merged = []
        for parts in zip(*results):
            if isinstance(parts[0], dict):
                info = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
                info["member"], info["_member"] = self.member_of.copy(), np.ones(self.num_envs, bool)
                merged.append(info)
            else:
                merged.append(np.concatenate(parts))
        return tuple(merged)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        options = dict(options or {})
        many = isinstance(seed, (list, tuple, np.ndarray))
        if many and len(seed) != self.num_envs:
            raise ValueError(f"seed: expected {self.num_envs} seeds, got {len(seed)}")
        for k, v in options.items():
            if isinstance(v, (list, tuple, np.ndarray)) and len(v) != self.num_envs:
                raise ValueError(f"options[{k!r}]: expected one entry per env ({self.num_envs}), got {len(v)}")
        super().reset(seed=None if seed is None or many else int(seed))
        results = []
        for m, s in zip(self.members, self.slices):
            sub_seed = None if seed is None else (list(seed[s]) if many else int(seed) + s.start)
            sub_opts = {k: (list(v[s]) if isinstance(v, (list, tuple, np.ndarray)) else v) for k, v in options.items()}
            results.append(m.reset(seed=sub_seed, options=sub_opts))
        return self._merge(results)

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions: expected a batch of {self.num_envs} actions (first dim), got shape {actions.shape}")
        return self._merge([m.step(actions[s]) for m, s in zip(self.members, self.slices)])

    def render(self):
        if self.render_mode is None:
            return None
        frames = [m.render() for m in self.members]
        return None if any(f is None for f in frames) else tuple(x for f in frames for x in f)

    def close_extras(self, **kwargs):
        for m in self.members:
            m.close()
