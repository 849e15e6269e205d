"""The closed-loop physics bounds: the simulator from the exact start state replays the real episode
frame for frame (rewards and terminations too); the probed-clip start needs a clip and stays close over the first chunk."""
import numpy as np
import pytest

from evaluation.probe import load_probe
from evaluation.rollouts import real_rollouts, simulator_from_probed_clip
from tests.test_evaluation import load_example

simulator_from_perturbed_state = load_example("closed_loop_physics_bound").simulator_from_perturbed_state


def test_exact_state_replays_the_real_frames_and_errors_move_the_pole():
    eps = real_rollouts("cartpole", 4, 0.5, 10_000, policies=["balance", "held_random"], context_frames=16)
    assert any(ep.terminated[ep.F:].any() for ep in eps)  # a held push ends an episode: termination is compared
    exact = simulator_from_perturbed_state(eps, "cartpole", 0.0, 0.0)
    for ep, g in zip(eps, exact):
        np.testing.assert_array_equal(g.frames, ep.frames[ep.F:])
        np.testing.assert_array_equal(g.terminated, ep.terminated[ep.F:])  # scored on termination like the dream
        np.testing.assert_allclose(g.rewards, ep.rewards[ep.F:])
    off = simulator_from_perturbed_state(eps, "cartpole", 2.0, 50.0)
    assert any(not np.array_equal(g.frames[-1], ep.frames[-1]) for ep, g in zip(eps, off))


def test_probed_clip_start_needs_a_clip_and_tracks_the_first_chunk():
    from causvid_env.checkpoint import default_checkpoint_dir

    probe, _ = load_probe(default_checkpoint_dir("cartpole") / "probe")
    eps = real_rollouts("cartpole", 2, 0.5, 10_000, policies=["balance"], context_frames=16)
    got = simulator_from_probed_clip(eps, "cartpole", probe)
    for ep, g in zip(eps, got):
        real = probe.targets(ep.states[ep.F:ep.F + 4])[:, 0]
        assert np.abs(probe.predict(g.frames[:4])[:, 0] - real).max() < 3.0  # degrees, within the first chunk
    with pytest.raises(ValueError, match="clip"):
        simulator_from_probed_clip(real_rollouts("cartpole", 1, 0.5, 10_000), "cartpole", probe)
