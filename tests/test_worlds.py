"""World specs and the real twin (RealWorldEnv)."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from causvid_env.real_env import RealWorldEnv
from causvid_env.rendering import Simulator
from causvid_env.worlds import get_world, list_worlds
from models.actions import ActionCodec, as_action_sequence, space_to_dict


def _gym_frame(env):
    return np.asarray(Image.fromarray(env.render()).resize((96, 64), Image.BOX))


def test_world_specs():
    assert {"cartpole", "pendulum"} <= set(list_worlds())
    spec = get_world("cartpole")
    assert spec.frames_per_chunk == 4 and spec.frame_shape == (64, 96, 3) and spec.fps == 50
    assert len(spec.variants) >= 6 and spec.variants[0].name == "default"
    assert len(set(spec.prompts().values())) == len(spec.variants)
    assert spec.make_action_space() == gym.spaces.Discrete(2)
    assert spec.null_action is None and spec.keymap == {"left": 0, "right": 1}
    pend = get_world("pendulum")
    assert isinstance(pend.make_action_space(), gym.spaces.Box) and pend.frame_shape == (64, 64, 3)
    with pytest.raises(ValueError, match="default"):
        spec.variant("nope")
    with pytest.raises(ValueError, match="cartpole"):
        get_world("nope")


def test_twin_matches_gymnasium_frame_for_frame():
    env = RealWorldEnv("cartpole")
    ref = gym.make("CartPole-v1", render_mode="rgb_array").unwrapped
    obs, info = env.reset(seed=7)
    ref.reset(seed=7)
    assert obs.shape == (4, 64, 96, 3) and obs.dtype == np.uint8
    assert all(np.array_equal(f, _gym_frame(ref)) for f in obs)  # still chunk
    rng = np.random.default_rng(0)
    for _ in range(5):
        actions = rng.integers(2, size=4)
        obs, reward, term, trunc, info = env.step(actions)
        for i, a in enumerate(actions):
            ref.step(int(a))
            np.testing.assert_array_equal(obs[i], _gym_frame(ref))
            np.testing.assert_allclose(info["state"][i], ref.state, rtol=1e-6)
        if term:
            break


def test_variant_physics_and_colors():
    sim = Simulator("cartpole", "long_red_low_gravity")
    assert sim.env.length == 0.75 and sim.env.gravity == 5.0
    assert np.isclose(sim.env.polemass_length, sim.env.masspole * 0.75)
    frame, _ = sim.reset(seed=0)
    default, _ = Simulator("cartpole").reset(seed=0)
    red = (frame[..., 0].astype(int) - frame[..., 1]) > 100
    assert red.sum() > 5 and not ((default[..., 0].astype(int) - default[..., 1]) > 100).any()


@pytest.mark.filterwarnings("error::UserWarning")  # alternating pushes: the episode never ends here
def test_reset_step_contract_and_seeding():
    env = RealWorldEnv("cartpole", variant="short_blue_strong_push")
    o1, info = env.reset(seed=3)
    assert info["prompt"] == get_world("cartpole").variant("short_blue_strong_push").prompt
    a1 = [env.step(a)[0] for a in (1, 0, 1)]
    o2, _ = env.reset(seed=3)
    a2 = [env.step(a)[0] for a in (1, 0, 1)]
    assert np.array_equal(o1, o2) and all(np.array_equal(x, y) for x, y in zip(a1, a2))
    obs, info = env.reset(seed=3, options={"variant": "default"})
    assert info["variant"] == "default"
    last = RealWorldEnv("cartpole", obs_mode="last", render_mode="rgb_array")
    obs, _ = last.reset(seed=0)
    assert obs.shape == (64, 96, 3) and np.array_equal(last.render(), obs)
    obs, r, term, trunc, info = last.step(0)
    assert obs.shape == (64, 96, 3) and info["state"].shape == (4, 4) and r == 4.0


def test_termination_and_step_after_done_warns():
    env = RealWorldEnv("cartpole")
    obs, _ = env.reset(seed=0)
    term = False
    for _ in range(100):
        obs, r, term, trunc, info = env.step(1)
        if term:
            break
    assert term
    k = int(np.argmax(info["frame_terminated"]))
    assert info["frame_terminated"][k:].all() and not info["frame_terminated"][:k].any()
    assert info["frame_valid"][: k + 1].all() and not info["frame_valid"][k + 1:].any()
    assert all(np.array_equal(obs[i], obs[k]) for i in range(k, 4))
    assert r == info["frame_rewards"].sum()
    with pytest.warns(UserWarning, match="already returned terminated"):
        env.step(0)


def test_truncation():
    env = RealWorldEnv("pendulum", max_episode_frames=8)
    env.reset(seed=0)
    assert not env.step([0.5])[3]
    assert env.step([0.5])[3]


@pytest.mark.parametrize("action", [2, -1, 1.0, "left", [0, 1], [[0]] * 4, True])
def test_bad_discrete_actions(action):
    env = RealWorldEnv("cartpole")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize("action", [[3.0], [np.nan], [0.0, 1.0], "x", np.zeros((3, 1))])
def test_bad_box_actions(action):
    env = RealWorldEnv("pendulum")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_action_sequences():
    box = get_world("pendulum").make_action_space()
    assert as_action_sequence(box, 1.5, 4).shape == (4, 1)
    assert as_action_sequence(box, np.linspace(-1, 1, 4)[:, None], 4).shape == (4, 1)
    assert as_action_sequence(gym.spaces.Discrete(2), np.int64(1), 4).tolist() == [1, 1, 1, 1]


def test_check_env():
    from gymnasium.utils.env_checker import check_env

    check_env(RealWorldEnv("cartpole"), skip_render_check=True)


def test_one_action_validation_path_for_every_space():
    md, mb = gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3)
    assert as_action_sequence(md, [1, 2], 4).tolist() == [[1, 2]] * 4  # held for the chunk
    assert as_action_sequence(mb, np.ones((4, 3), int), 4).dtype == mb.dtype
    for space, bad in ((md, [2, 0]), (mb, [0, 2, 1]), (md, [0.5, 1.0])):
        with pytest.raises(ValueError, match="action"):
            as_action_sequence(space, bad, 4)
    codec = ActionCodec(space_to_dict(gym.spaces.Discrete(2)))
    with pytest.raises(ValueError, match="action values must lie in"):  # the codec checks through as_action_sequence
        codec.to_features(np.array([0, 2]))
