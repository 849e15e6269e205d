"""The shipped CartPole checkpoint follows actions: measured with the state probe against the
real twin under the same pushes (not by eye)."""
import numpy as np
import pytest

from causvid_env.checkpoint import default_checkpoint_dir

SHIPPED = default_checkpoint_dir("cartpole")
pytestmark = [pytest.mark.skipif(not (SHIPPED / "checkpoint.json").is_file(), reason="no checkpoint shipped in the package"),
              pytest.mark.slow]  # ~150 chunks of the full-size model plus the real twin


@pytest.fixture(scope="module")
def pushes():
    from evaluation.action_following import measure
    return measure(seeds=(0, 1, 2), seconds=2.0)


def test_left_and_right_pushes_move_the_dream_like_the_real_cart(pushes):
    real, dream = pushes["real"], pushes["dream"]
    # sanity of the measurement itself: in the real twin a right push moves the cart right
    assert real["gap_cart_x_m"] > 0.05
    assert dream["gap_cart_x_m"] > 0, pushes
    # the pole tips against the push, in the same direction as in the real twin
    assert np.sign(dream["gap_pole_angle_deg"]) == np.sign(real["gap_pole_angle_deg"]), pushes


def test_the_pole_falls_when_nobody_balances(pushes):
    """Holding one push for 2 s topples the pole in the real twin; the dream must show the fall
    too: a large probe angle or the termination head firing."""
    for side in ("right", "left"):
        real, dream = pushes["real"][side], pushes["dream"][side]
        assert real["terminated_within"] >= 2
        assert abs(dream["pole_angle_deg"]) > 8.0 or dream["terminated_within"] >= 2, pushes
