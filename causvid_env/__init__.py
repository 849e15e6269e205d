"""causvid_env: a causal few-step video diffusion world model (CausVid) as a Gymnasium environment.

    import gymnasium as gym
    import causvid_env  # registers causvid/CartPole-v0
    env = gym.make("causvid/CartPole-v0")
"""
from causvid_env.registration import WORLD_IDS, register_envs

register_envs()

__all__ = ["WORLD_IDS", "CausVidEnv", "CausVidVectorEnv", "RealWorldEnv", "get_world"]


def __getattr__(name):  # lazy: importing the package must stay cheap (no torch model load)
    if name == "CausVidEnv":
        from causvid_env.env import CausVidEnv
        return CausVidEnv
    if name == "CausVidVectorEnv":
        from causvid_env.vector_env import CausVidVectorEnv
        return CausVidVectorEnv
    if name == "RealWorldEnv":
        from causvid_env.real_env import RealWorldEnv
        return RealWorldEnv
    if name == "get_world":
        from causvid_env.worlds import get_world
        return get_world
    raise AttributeError(name)
