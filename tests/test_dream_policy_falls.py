"""examples/dream_policy_falls.py: the probe balancer's state estimate, its run on the real twin, and
its argument checks."""
import math

import numpy as np
import pytest

from evaluation.probe import probe_state
from tests.test_evaluation import load_example

falls = load_example("dream_policy_falls")


def test_probe_state_takes_the_last_pose_and_the_fitted_rates():
    fps = 50
    t = np.arange(4) / fps
    read = np.stack([2.0 + 30.0 * t, 0.1 - 0.5 * t], axis=1)  # angle deg (30 deg/s), cart m (-0.5 m/s)
    x, x_dot, theta, theta_dot = probe_state(read, 0, 1, fps)
    assert x == pytest.approx(0.1 - 0.5 * t[-1]) and x_dot == pytest.approx(-0.5)
    assert theta == pytest.approx(math.radians(2.0 + 30.0 * t[-1])) and theta_dot == pytest.approx(math.radians(30.0))


def test_probe_balancer_runs_on_the_real_twin_and_reports_each_episode():
    res = falls.run(None, 2, None, max_steps=6, controller="probe_balancer", real=True)
    assert res["env"] == "real" and res["episodes"] == 2 and len(res["episodes_detail"]) == 2
    for r in res["episodes_detail"]:
        assert 1 <= r["chunks"] <= 6 and len(r["angle_per_chunk_deg"]) == r["chunks"] + 1 and set(r["actions"]) <= {0, 1}
    # it balances: the real pole is still up after 6 chunks from CartPole's near-upright starts
    assert all(not r["terminated"] for r in res["episodes_detail"])


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="--episodes"):
        falls.run(None, 0, None)
    with pytest.raises(ValueError, match="--controller"):
        falls.run(None, 1, None, controller="pid")


def test_the_policy_reads_its_own_pushes_off_the_real_cart():
    """On the real twin the shipped policy's pose encoder decodes the push it made last from the cart's
    curvature (the cue it was trained on); the script records it per decision."""
    res = falls.run(None, 1, None, max_steps=8, controller="policy", real=True)
    read = res["episodes_detail"][0]["push_read_right"]
    assert len(read) == 6 and res["push_read_right_fraction"] >= 5 / 6
