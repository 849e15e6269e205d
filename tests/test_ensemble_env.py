"""DreamEnsembleVectorEnv: several checkpoints as one vector env, each member equal to its own CausVidVectorEnv."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
import pytest

from causvid_env.ensemble_vector_env import DreamEnsembleVectorEnv, split_counts
from causvid_env.vector_env import CausVidVectorEnv
from tests.helpers import tiny_checkpoint


@pytest.fixture(scope="module")
def two_ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    return [tiny_checkpoint(d / "a", seed=0), tiny_checkpoint(d / "b", seed=1)]


def test_split_counts():
    assert split_counts(16, 2) == [8, 8] and split_counts(16, 3) == [6, 5, 5] and split_counts(3, 3) == [1, 1, 1]
    with pytest.raises(ValueError, match="num_envs"):
        split_counts(1, 2)


def test_each_member_dreams_as_its_own_vector_env(two_ckpts):
    a, b = two_ckpts
    ens = DreamEnsembleVectorEnv(3, [a, b], max_episode_steps=50)
    assert list(ens.member_of) == [0, 0, 1] and ens.metadata["autoreset_mode"] == CausVidVectorEnv.metadata["autoreset_mode"]
    ref_a, ref_b = CausVidVectorEnv(2, checkpoint=a, max_episode_steps=50), CausVidVectorEnv(1, checkpoint=b, max_episode_steps=50)
    acts = np.array([[0, 1, 1], [1, 1, 0], [0, 0, 1]])
    obs, info = ens.reset(seed=7)
    ra, rb = ref_a.reset(seed=7)[0], ref_b.reset(seed=9)[0]  # env i of the ensemble gets seed + i
    steps = [(obs, ra, rb)]
    for act in acts:
        o, r, term, trunc, info = ens.step(act)
        oa, rwa, *_ = ref_a.step(act[:2])
        ob, rwb, *_ = ref_b.step(act[2:])
        assert np.allclose(r, np.concatenate([rwa, rwb])) and term.shape == trunc.shape == (3,)
        steps.append((o, oa, ob))
    for o, oa, ob in steps:
        assert np.array_equal(o, np.concatenate([oa, ob]))
    assert list(info["member"]) == [0, 0, 1] and info["frame_rewards"].shape[0] == 3
    # the members are different dreams: the same start and actions give different frames
    assert not np.array_equal(steps[-1][0][0], steps[-1][0][2])


def test_reset_options_reach_the_right_env(two_ckpts):
    seen = []
    ens = DreamEnsembleVectorEnv(2, two_ckpts, max_episode_steps=1,
                                 reset_options_fn=lambda i, rng: seen.append(i) or {})
    ens.reset(seed=0, options={"prompt": ["a cart and a pole", None]})
    ens.step(np.array([0, 1]))
    _, r, term, trunc, info = ens.step(np.array([0, 1]))  # NEXT_STEP autoreset: both episodes restart
    assert info["episode_reset"].all() and sorted(seen) == [0, 1]


def test_bad_arguments_name_themselves(two_ckpts):
    with pytest.raises(ValueError, match="checkpoints"):
        DreamEnsembleVectorEnv(2, str(two_ckpts[0]))
    with pytest.raises(ValueError, match="num_envs"):
        DreamEnsembleVectorEnv(1, two_ckpts)
    ens = DreamEnsembleVectorEnv(2, two_ckpts)
    with pytest.raises(ValueError, match=r"options\['prompt'\]"):
        ens.reset(options={"prompt": ["x", "y", "z"]})
    ens.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        ens.step(np.array([0]))
