"""Gymnasium ids: `causvid/CartPole-v0`, `causvid/Pendulum-v0` (`gymnasium.make` and `make_vec`)."""
from __future__ import annotations

from gymnasium.envs.registration import register, registry

WORLD_IDS = {"cartpole": "causvid/CartPole-v0", "pendulum": "causvid/Pendulum-v0"}


def register_envs() -> None:
    for world, env_id in WORLD_IDS.items():
        if env_id in registry:
            continue
        register(id=env_id, entry_point="causvid_env.env:CausVidEnv", vector_entry_point="causvid_env.vector_env:CausVidVectorEnv",
                 kwargs={"world": world}, disable_env_checker=False)
