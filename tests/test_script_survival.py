"""evaluation.script_survival: open-loop scripts, the frames they survive in the real twin and a dream, the ratio gate."""
import pytest

from causvid_env.checkpoint import load_world_model
from evaluation import script_survival as ss
from tests.helpers import tiny_checkpoint


def test_scripts_repeat_their_pattern_and_random_ones_are_shared_by_real_and_dream():
    assert ss.script_actions("wiggle", 6, 0) == [0, 1, 1, 0, 0, 1]
    assert ss.script_actions("right", 3, 5) == [1, 1, 1]
    a, b = ss.script_actions("random", 40, 3), ss.script_actions("random", 40, 3)
    assert a == b and set(a) == {0, 1} and a != ss.script_actions("random", 40, 4)
    with pytest.raises(ValueError, match="scripts: unknown script 'spin'"):
        ss.script_actions("spin", 3, 0)


def test_frames_until_end_counts_up_to_the_first_terminating_frame():
    assert ss.frames_until_end({"frame_terminated": [False] * 4}, 4) == (4, False)
    assert ss.frames_until_end({"frame_terminated": [False, True, True, False]}, 4) == (2, True)
    # the real twin pads after an ending: only frames that happened count
    assert ss.frames_until_end({"frame_terminated": [False] * 4, "frame_valid": [True, True, False, False]}, 4) == (2, False)


def test_holding_one_push_ends_the_real_pole_within_a_second():
    real = ss.survival(None, "cartpole", ["left", "right"], [0, 1, 2], chunks=30, progress=False)
    for frames in real.values():
        assert all(4 <= f <= 50 for f in frames)  # CartPole-v1 under a held push falls in 8-12 frames


def test_a_dream_whose_best_script_outlives_the_real_best_fails_the_gate():
    real = {"wiggle": [30, 30], "left": [10, 10]}
    res = ss.compare(real, {"wiggle": [45, 48], "left": [9, 11]}, limit=1.3)
    assert res["best_dream_script"] == res["best_real_script"] == "wiggle"
    assert res["free_reward_ratio"] == pytest.approx(46.5 / 30) and not res["passes"]
    assert res["scripts"]["wiggle"]["dream_outlives_share"] == 1.0
    # a short script that lives a little longer in the dream is a large ratio but no reward to find
    res = ss.compare(real, {"wiggle": [20, 22], "left": [16, 16]}, limit=1.3)
    assert res["worst_script"] == "left" and res["worst_ratio"] == pytest.approx(1.6) and res["passes"]
    # the best dream script need not be the real one's
    res = ss.compare(real, {"wiggle": [20, 22], "left": [42, 44]}, limit=1.3)
    assert res["best_dream_script"] == "left" and res["free_reward_ratio"] == pytest.approx(43 / 30) and not res["passes"]


def test_a_dream_that_ranks_a_script_above_the_balancing_policy_fails():
    real = {"wiggle": [30, 30], "left": [10, 10]}
    dream = {"wiggle": [38, 40], "left": [9, 11]}  # free reward 1.3x: within the limit
    ok = ss.compare(real, dream, 1.3, policy_real=[500, 500], policy_dream=[45, 47])
    assert ok["passes"] and ok["ranks_policy_first"] and ok["policy"]["over_best_script_real"] == pytest.approx(500 / 30)
    bad = ss.compare(real, dream, 1.3, policy_real=[500, 500], policy_dream=[28, 30])
    assert not bad["passes"] and not bad["ranks_policy_first"] and bad["policy"]["over_best_script_dream"] == pytest.approx(29 / 39)


def test_the_balancing_controller_outlives_every_script_in_the_real_twin():
    seeds = [0, 1]
    assert min(ss.policy_survival(None, "cartpole", seeds, 30, policy="balancing")) == 30 * 4
    best = max(max(v) for v in ss.survival(None, "cartpole", list(ss.SCRIPTS), seeds, 30, progress=False).values())
    assert best < 30 * 4


def test_the_gate_runs_end_to_end_on_a_tiny_dream(tmp_path):
    ck = tiny_checkpoint(tmp_path / "ck")
    dream = ss.survival(load_world_model(ck), "cartpole", ["wiggle", "random"], [0, 1], chunks=3, progress=False)
    assert set(dream) == {"wiggle", "random"} and all(1 <= f <= 12 for v in dream.values() for f in v)
    res = ss.main(["--checkpoint", str(ck), "--starts", "2", "--chunks", "3", "--scripts", "left,wiggle", "--no-progress",
                   "--json", str(tmp_path / "out.json"), "--plot", str(tmp_path / "out.png")])
    row = next(iter(res["models"].values()))
    assert set(row["scripts"]) == {"left", "wiggle"} and (tmp_path / "out.json").is_file()
    assert row["temperature"] == 1.0  # the tiny checkpoint names none: the trained one
    assert res["seeds"] == [0, 1] and len(row["policy"]["dream"]) == 2 and row["policy"]["real_mean"] == 12  # the shipped policy holds the real pole 3 chunks
    assert (tmp_path / "out.png").stat().st_size > 0


def test_bad_arguments_name_themselves(capsys):
    with pytest.raises(SystemExit):
        ss.main(["--scripts", "left,spin"])
    assert "--scripts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ss.main(["--policy", "balancing"])
    assert "--policy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ss.main(["--first-seed", "-1"])
    assert "--first-seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ss.main(["--starts", "0"])
    assert "--starts" in capsys.readouterr().err


def test_the_results_page_lists_every_models_free_reward_and_ranking(tmp_path):
    import json

    from tests.test_evaluation import load_example

    real = {"wiggle": [30, 30], "left": [10, 10]}
    res = {"kind": "script_survival", "starts": 2, "command": "python -m evaluation.script_survival", "models": {
        "good": ss.compare(real, {"wiggle": [20, 22], "left": [9, 11]}, 1.3, [500, 500], [45, 47]),
        "blind": ss.compare(real, {"wiggle": [44, 46], "left": [9, 11]}, 1.3, [500, 500], [30, 32])}}
    (tmp_path / "script_survival").mkdir()
    (tmp_path / "script_survival" / "x.json").write_text(json.dumps(res))
    lines = load_example("compose_results").script_survival_section(tmp_path)
    good = next(x for x in lines if x.startswith("| good"))
    blind = next(x for x in lines if x.startswith("| blind"))
    assert "0.70x" in good and "46.0 (500)" in good and good.endswith("pass |")
    assert "1.50x" in blind and blind.endswith("fail |")
