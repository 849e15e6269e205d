"""The push-response gate: the real simulator passes its own gate, a mirrored response fails it, and
teachers and students run through it."""
import numpy as np
import pytest

from causvid_env.checkpoint import load_world_model
from causvid_env.rendering import scaled_physics
from evaluation.push_response import (PROTOCOLS, SIDES, gate, real_finals, real_starts, student_gate, teacher_gate)


def test_starts_follow_the_protocols():
    image, clip = real_starts("cartpole", [0, 1], "image"), real_starts("cartpole", [0, 1], "clip")
    assert image[0].frames.shape == (4, 64, 96, 3) and clip[0].frames.shape == (16, 64, 96, 3)
    np.testing.assert_array_equal(image[0].frames[0], clip[0].frames[0])  # the same reset frame
    assert (image[0].frames == image[0].frames[0]).all()  # the still chunk
    with pytest.raises(ValueError, match="protocol"):
        real_starts("cartpole", [0], "video")


def test_the_real_simulator_passes_and_its_mirror_fails():
    def real(st, a, c):
        return real_finals("cartpole", st, a, c)[0]

    res = gate(real, starts=2)
    for protocol in PROTOCOLS:
        r = res["protocols"][protocol]
        assert r["ratio"]["pole_angle_deg"] == pytest.approx(1.0) and r["ratio"]["cart_x_m"] == pytest.approx(1.0)
        assert r["real"]["gap_pole_angle_deg"] < -10 and r["real"]["gap_cart_x_m"] > 0.1  # a right push tips the pole left
    assert res["passes"] and res["passes_agent_band"]
    weak = gate(lambda st, a, c: real_finals(scaled_physics("cartpole", {"force_mag": 0.8}), st, a, c)[0], starts=2)
    for r in weak["protocols"].values():  # a push 20% weak: inside the +-30% gate, outside the +-12% agent band
        assert 0.7 < r["ratio"]["cart_x_m"] < 0.9 and 0.7 < r["ratio"]["pole_angle_deg"] < 0.9
    assert weak["passes"] and not weak["passes_agent_band"]
    mirrored = gate(lambda st, a, c: real(st, 1 - a, c), starts=2)
    assert not mirrored["passes"]
    assert mirrored["protocols"]["image"]["ratio"]["pole_angle_deg"] == pytest.approx(-1.0)
    assert mirrored["protocols"]["clip"]["right_sign_fraction"]["cart_x_m"] == 0.0


def test_teacher_and_student_run_through_the_gate(tiny_ckpt):
    model = load_world_model(tiny_ckpt)
    s = student_gate(model, starts=1)
    t = teacher_gate(model.student, model, starts=1, num_steps=2, guidance_text=1.0, guidance_action=2.0)
    for res in (s, t):
        assert set(res["protocols"]) == set(PROTOCOLS)
        for r in res["protocols"].values():
            assert len(r["model"]["per_start_gap_pole_angle_deg"]) == 1 and np.isfinite(r["model"]["gap_cart_x_m"])
            for q, v in r["agent_band_ratio"].items():  # the agent band reads the response against the decoder's
                assert v == pytest.approx(r["ratio"][q] / r["vae_bound"]["ratio"][q])
    assert t["sampling"]["num_steps"] == 2
    cool = teacher_gate(model.student, model, starts=1, num_steps=2, guidance_text=1.0, guidance_action=2.0, temperature=0.2)
    assert cool["sampling"]["temperature"] == 0.2
    with pytest.raises(ValueError, match="--teacher-temperature"):
        from evaluation.push_response import main
        main(["--teacher", "unused", "--teacher-temperature", "0"])
    assert [side for side, _ in SIDES] == ["right", "left"]


def test_a_students_snapshots_make_a_learning_curve(tiny_ckpt, tmp_path):
    """--curve-model student gates each model_stepN/ of an ODE-init or DMD stage as a causal student
    (the env's 4 steps), and the curve's rows carry the warm start's offset."""
    from evaluation.push_response import main

    model = load_world_model(tiny_ckpt)
    for step in (2, 4):
        model.student.save_pretrained(tmp_path / "dmd" / f"model_step{step}")
    res = main(["--checkpoint", str(tiny_ckpt), "--curve", str(tmp_path / "dmd"), "--curve-model", "student",
                "--curve-offset", "10", "--starts", "1", "--json", str(tmp_path / "curve.json")])
    assert [c["step"] for c in res["curve"]] == [12, 14]
    assert {"student step 12", "student step 14"} <= set(res["models"])
    assert "sampling" not in res["models"]["student step 12"]  # a student, not the teacher's guided ODE sampler
    model.student.save_pretrained(tmp_path / "dmd" / "raw_step6")  # DMD's raw generator beside its EMA
    raw = main(["--checkpoint", str(tiny_ckpt), "--curve", str(tmp_path / "dmd"), "--curve-model", "student",
                "--curve-snapshots", "raw_step", "--starts", "1"])
    assert [c["step"] for c in raw["curve"]] == [6]
