"""CausVidVectorEnv: K dreams advanced by one batched forward per step (no per-env processes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from causvid_env.checkpoint import WorldModel
from causvid_env.engine import DreamEngine
from causvid_env.env import StepBeforeResetError, resolve_model
from causvid_env.inputs import check_prompt, quiet_text_encoder, to_image
from causvid_env.worlds import WorldSpec, get_world
from models.actions import as_action_sequence


class CausVidVectorEnv(VectorEnv):
    """`num_envs` independent dreams with per-env KV caches, prompts, seeds and episode lengths,
    stepped together in one batched forward pass of the student.

    Spaces are the batched versions of `CausVidEnv`'s. Autoreset follows Gymnasium 1.x
    `AutoresetMode.NEXT_STEP`: the step after an episode ends returns the first observation of a
    new episode (reward 0, not terminated) and ignores that env's action.

    `reset(seed=None, options=None)`: `seed` an int (env i gets seed + i, matching a `CausVidEnv`
    reset with that seed) or a list; `options` may hold `"prompt"` and `"image"` (one for all envs
    or a list with one entry per env, None entries meaning the default). `reset()` always resets
    every env: all envs advance together in one batched forward, so a partial reset would also
    step the others. `options["reset_mask"]` is therefore accepted only when it is all True;
    envs whose episode ended are reset by the next `step()` (NEXT_STEP autoreset).
    `reset_options_fn(env_index, rng) -> dict` chooses the options of those automatic resets (e.g.
    start from real frames); by default they use the default prompt. `timing_info=True` adds the
    wall-clock `latency_s` to the infos (off by default: it is not reproducible). `student_dtype`:
    as for `CausVidEnv` (autocast precision of the student, for GPUs); `temperature`: as for `CausVidEnv`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, world: str | WorldSpec = "cartpole", checkpoint: str | Path | WorldModel | None = None,
                 device: str = "cpu", window_seconds: float | None = None, sink_chunks: int = 0, obs_mode: str = "chunk",
                 max_episode_steps: int | None = None, prompt: str | None = None, render_mode: str | None = None,
                 reset_options_fn: Callable[[int, np.random.Generator], dict] | None = None, timing_info: bool = False,
                 text_encoder=None, student_dtype: torch.dtype | None = None, temperature: float | None = None):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs: must be >= 1, got {num_envs}")
        if obs_mode not in ("chunk", "last"):
            raise ValueError(f"obs_mode: expected 'chunk' or 'last', got {obs_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.world = get_world(world) if isinstance(world, str) else world
        self.num_envs = int(num_envs)
        self.model = resolve_model(self.world, checkpoint, device)
        self.engine = DreamEngine(self.model, self.world, self.num_envs, window_seconds, sink_chunks, device, text_encoder,
                                  student_dtype=student_dtype, temperature=temperature)
        if obs_mode == "last":  # observations and render() show only the chunk's last frame: decode only it
            self.engine.decode_frames = (self.engine.F - 1,)
        self.metadata = dict(self.metadata, render_fps=self.world.fps)
        self.F = self.engine.F * self.engine.c
        H, W = self.world.frame_height, self.world.frame_width
        shape = (self.F, H, W, 3) if obs_mode == "chunk" else (H, W, 3)
        self.obs_mode, self.render_mode, self.timing_info = obs_mode, render_mode, timing_info
        self.single_observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.single_action_space = self.world.make_action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.max_episode_steps = int(max_episode_steps or max(1, self.world.max_episode_frames // self.F))
        self.default_prompt = check_prompt(prompt, None, "prompt") if prompt is not None else self.world.variant().prompt
        self.reset_options_fn = reset_options_fn
        self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        self._steps = np.zeros(self.num_envs, np.int64)
        self._autoreset = np.zeros(self.num_envs, bool)
        self._started = False
        self._last = None

    # -- reset -------------------------------------------------------------------------------------
    def _per_env(self, value, name: str) -> list:
        if isinstance(value, (list, tuple)):
            if len(value) != self.num_envs:
                raise ValueError(f"options[{name!r}]: expected one entry per env ({self.num_envs}), got {len(value)}")
            return list(value)
        return [value] * self.num_envs

    def _prepare_reset(self, i: int, opts: dict, override: dict) -> None:
        unknown = set(opts) - {"prompt", "image"}
        if unknown:
            raise ValueError(f"options: unknown keys {sorted(unknown)}; supported: prompt, image, reset_mask")
        prompt = opts.get("prompt")
        self.engine.set_prompt(i, check_prompt(prompt if prompt is not None else self.default_prompt,
                                               quiet_text_encoder(self.engine), "options['prompt']" if prompt is not None else "prompt"))
        self.engine.seed(i, int(self._rngs[i].integers(2**62)))
        if opts.get("image") is not None:
            still = np.repeat(to_image(opts["image"], self.world, "image")[None], self.F, axis=0)
            override[i] = self.engine.encode_frames(still)
        self._steps[i] = 0

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, bool)), bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask']: expected shape ({self.num_envs},), got {mask.shape}")
        if not mask.all():
            raise ValueError("options['reset_mask']: partial resets are not supported (every env advances in the same "
                             "batched forward, so resetting some would step the others); reset() resets every env, and "
                             "envs whose episode ended are reset by the next step() (autoreset_mode NEXT_STEP)")
        many = isinstance(seed, (list, tuple, np.ndarray))
        super().reset(seed=None if seed is None or many else int(seed))  # the vector env's own np_random
        if seed is not None:
            seeds = list(seed) if many else [int(seed) + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: expected {self.num_envs} seeds, got {len(seeds)}")
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i] = seeding.np_random(int(s))[0]
        per = {k: self._per_env(v, k) for k, v in options.items()}
        override: dict = {}
        for i in np.flatnonzero(mask):
            self._prepare_reset(int(i), {k: v[i] for k, v in per.items()}, override)
        res = self.engine.chunk([None] * self.num_envs, reset=mask, override=override)
        self._started = True
        self._autoreset[:] = False
        self._last = res
        return self._obs(res.frames), self._infos(res, np.zeros(self.num_envs, bool))

    # -- step ------------------------------------------------------------------------------------------
    def step(self, actions):
        if not self._started:
            raise StepBeforeResetError("step: call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions: expected a batch of {self.num_envs} actions (first dim), got shape {actions.shape}")
        per_frame: list = []
        override: dict = {}
        resetting = self._autoreset.copy()
        for i in range(self.num_envs):
            if resetting[i]:
                opts = self.reset_options_fn(i, self._rngs[i]) if self.reset_options_fn else {}
                self._prepare_reset(i, dict(opts), override)
                per_frame.append(None)
            else:
                per_frame.append(as_action_sequence(self.single_action_space, actions[i], self.F))
        res = self.engine.chunk(per_frame, reset=resetting, override=override)
        term = res.frame_terminated.any(axis=1) & ~resetting
        first = np.where(res.frame_terminated.any(axis=1), res.frame_terminated.argmax(axis=1), self.F - 1)
        upto = np.arange(self.F)[None] <= first[:, None]
        reward = np.where(resetting, 0.0, (res.frame_rewards * upto).sum(axis=1)).astype(np.float32)
        self._steps += ~resetting
        trunc = ~term & ~resetting & (self._steps >= self.max_episode_steps)
        self._autoreset = term | trunc
        self._last = res
        return self._obs(res.frames), reward, term, trunc, self._infos(res, resetting)

    def render(self):
        if self.render_mode is None or self._last is None:
            return None
        return tuple(f[-1].copy() for f in self._last.frames)

    def _obs(self, frames: np.ndarray) -> np.ndarray:
        return frames if self.obs_mode == "chunk" else frames[:, -1]

    def _infos(self, res, resetting: np.ndarray) -> dict:
        ones = np.ones(self.num_envs, bool)
        info = {"context_seconds": self.engine.context_seconds(), "_context_seconds": ones,
                "prompt": np.array(self.engine.prompts, dtype=object), "_prompt": ones,
                "frame_rewards": res.frame_rewards, "_frame_rewards": ones,
                "frame_terminated": res.frame_terminated, "_frame_terminated": ones,
                "episode_reset": resetting.copy(), "_episode_reset": ones}
        if self.timing_info:
            info["latency_s"] = np.full(self.num_envs, res.latency_s)
            info["_latency_s"] = ones
        return info
