"""The chunk-dynamics gate: the fit recovers a known law, the real simulator passes against itself,
and a model that ignores its pushes fails."""
import numpy as np
import pytest

from evaluation.chunk_dynamics import (COEFFICIENTS, chunk_dynamics_report, fit_chunk_dynamics, random_scripts,
                                       real_script_frames)


def _simulate(scripts, a=-2.0, b=-3.0, c=0.95, e=0.1, bias=0.05, th0=None, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    N, n = scripts.shape
    u = 2.0 * scripts - 1.0
    th0 = rng.normal(0, 2, N) if th0 is None else th0
    th = np.zeros((N, n + 1))
    th[:, 0] = th0
    th[:, 1] = th0 + a * u[:, 0]  # chunk 1 (outside the fit)
    for t in range(2, n + 1):
        d = a * u[:, t - 1] + b * u[:, t - 2] + c * (th[:, t - 1] - th[:, t - 2]) + e * th[:, t - 1] + bias
        th[:, t] = th[:, t - 1] + d + noise * rng.normal(size=N)
    return th[:, 1:], th0


def test_fit_recovers_a_known_chunk_law():
    scripts = random_scripts(40, 6, seed=3)
    assert scripts.shape == (40, 6) and set(np.unique(scripts)) == {0, 1}
    angles, th0 = _simulate(scripts)
    fit = fit_chunk_dynamics(angles, th0, scripts)
    assert fit["rows"] == 40 * 5
    for k, v in zip(COEFFICIENTS, (-2.0, -3.0, 0.95, 0.1, 0.05)):
        assert fit["coefficients"][k] == pytest.approx(v, abs=1e-3), k
    assert fit["residual_sd_deg"] < 1e-6
    keep = np.ones_like(scripts, bool)
    keep[:, 3:] = False  # only chunks 2 and 3 of each script
    assert fit_chunk_dynamics(angles, th0, scripts, keep)["rows"] == 40 * 2
    assert fit_chunk_dynamics(angles[:1], th0[:1], scripts[:1])["coefficients"] is None  # too few rows to fit


class _AngleProbe:
    """Reads the 'pole angle' written into a frame's first pixel (a stand-in for the state probe)."""

    def predict(self, frames):
        return np.stack([frames[:, 0, 0, 0].astype(np.float64) - 100.0, np.zeros(len(frames))], 1)


def _frames(angles):
    f = np.zeros(angles.shape + (2, 2, 3), np.uint8)
    f[..., 0, 0, 0] = np.clip(np.round(angles + 100.0), 0, 255)
    return f


def test_report_passes_the_real_law_and_fails_a_model_that_ignores_pushes():
    scripts = random_scripts(48, 6, seed=1)
    real, th0 = _simulate(scripts, th0=np.zeros(48), a=-2.0, b=-3.0, c=0.9, e=0.0, bias=0.0)
    deaf, _ = _simulate(scripts, th0=np.zeros(48), a=0.0, b=0.0, c=0.9, e=0.0, bias=0.0, noise=1.0)
    rep = chunk_dynamics_report(_AngleProbe(), _frames(real), {"same": _frames(real), "deaf": _frames(deaf)},
                                _frames(th0[:, None])[:, 0], scripts)
    assert rep["models"]["same"]["passes"] and rep["models"]["same"]["angle_error_deg"] == [0.0] * 6
    assert not rep["models"]["deaf"]["passes"]
    assert abs(rep["models"]["deaf"]["ratio"]["push"]) < 0.3
    assert len(rep["repeat_last_frame_angle_error_deg"]) == 6


def test_real_scripts_render_one_frame_per_chunk_and_pushes_move_the_pole_apart():
    from evaluation.push_response import real_starts

    starts = real_starts("cartpole", range(2), "image")
    right = real_script_frames("cartpole", starts, np.ones((2, 3), np.int64))
    left = real_script_frames("cartpole", starts, np.zeros((2, 3), np.int64))
    assert right.shape == (2, 3, 64, 96, 3) and right.dtype == np.uint8
    assert not np.array_equal(right[:, -1], left[:, -1])


def test_command_runs_students_teachers_and_the_vae_bound(tiny_ckpt, tmp_path):
    from evaluation.chunk_dynamics import main

    res = main(["--checkpoint", str(tiny_ckpt), "--teacher", str(tiny_ckpt / "student"), "--starts", "4", "--chunks", "3",
                "--protocols", "image", "--num-steps", "2", "--json", str(tmp_path / "cd.json")])
    assert (tmp_path / "cd.json").is_file() and np.asarray(res["scripts"]).shape == (4, 3)
    models = res["protocols"]["image"]["models"]
    assert len(models) == 3 and any(k.startswith("VAE bound") for k in models)
    assert any(k.startswith("teacher") for k in models) and any(k.startswith("student") for k in models)
    for fit in models.values():
        assert len(fit["angle_error_deg"]) == 3
    with pytest.raises(ValueError, match="--protocols"):
        main(["--checkpoint", str(tiny_ckpt), "--protocols", "video"])


def test_results_page_renders_the_gate(tmp_path):
    import json

    from tests.test_evaluation import load_example

    scripts = random_scripts(48, 6, seed=1)
    real, th0 = _simulate(scripts, th0=np.zeros(48), a=-2.0, b=-3.0, c=0.9, e=0.0, bias=0.0)
    rep = chunk_dynamics_report(_AngleProbe(), _frames(real), {"same": _frames(real)}, _frames(th0[:, None])[:, 0], scripts)
    (tmp_path / "chunk_dynamics").mkdir()
    (tmp_path / "chunk_dynamics" / "x.json").write_text(json.dumps({"command": "python -m evaluation.chunk_dynamics", "starts": 48,
                                                                     "chunks": 6, "protocols": {"clip": rep}}))
    lines = load_example("compose_results").chunk_dynamics_section(tmp_path)
    row = next(x for x in lines if x.startswith("| same | clip"))
    assert "1.00x" in row and row.endswith("pass |")


def _gate_json(path, scripts, th0, models: dict):
    """A chunk-dynamics JSON as the command writes it, built from simulated angles."""
    import json

    real = models.pop("real")
    rep = chunk_dynamics_report(_AngleProbe(), _frames(real), {k: _frames(v) for k, v in models.items()},
                                _frames(th0[:, None])[:, 0], scripts)
    path.write_text(json.dumps({"kind": "chunk_dynamics", "scripts": scripts.tolist(), "protocols": {"clip": rep}}))
    return rep


def test_bootstrap_intervals_cover_the_truth_and_pair_models_on_the_same_starts(tmp_path):
    from evaluation.gate_intervals import main

    scripts = random_scripts(60, 6, seed=2)
    th0 = np.zeros(60)
    law = dict(th0=th0, b=-3.0, c=0.9, e=0.0, bias=0.0)
    real, _ = _simulate(scripts, a=-2.0, noise=0.5, seed=0, **law)
    close, _ = _simulate(scripts, a=-2.0, noise=0.5, seed=1, **law)
    weak, _ = _simulate(scripts, a=-0.8, noise=0.5, seed=2, **law)  # push at 0.4x the real one
    rep = _gate_json(tmp_path / "a.json", scripts, th0, {"real": real, "close": close})
    lo, hi = rep["models"]["close"]["ratio_ci90"]["push"]
    assert lo < 1.0 < hi and hi - lo < 0.6
    rep_b = _gate_json(tmp_path / "b.json", scripts, th0, {"real": real, "weak": weak})
    assert rep_b["models"]["weak"]["ratio_ci90"]["push"][1] < 0.7  # the interval excludes the band
    table = main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--boots", "200", "--json", str(tmp_path / "gi.json")])
    weak_row = table["clip"]["models"]["weak [b.json]"]["push"]
    assert table["clip"]["against"] == "close [a.json]" and weak_row["closer_than_against"]["p_closer"] < 0.05
    assert weak_row["closer_than_against"]["distance_change_ci90"][0] > 0  # weak is farther from the real push
    other = random_scripts(60, 6, seed=5)
    _gate_json(tmp_path / "c.json", other, th0, {"real": _simulate(other, a=-2.0, **law)[0], "x": close})
    with pytest.raises(ValueError, match="c.json"):
        main([str(tmp_path / "a.json"), str(tmp_path / "c.json")])
    with pytest.raises(ValueError, match="--against"):
        main([str(tmp_path / "a.json"), "--against", "nobody", "--boots", "100"])


def test_reading_jitter_alone_pulls_the_momentum_ratio_down():
    from evaluation.gate_intervals import jitter_bias

    scripts = random_scripts(60, 6, seed=4)
    real, th0 = _simulate(scripts, th0=np.zeros(60), a=-2.0, b=-3.0, c=0.9, e=0.0, bias=0.0, noise=0.3)
    none, big = jitter_bias(real, th0, scripts, [0.0, 2.0], repeats=5)
    assert all(v == pytest.approx(1.0) for v in none["ratio"].values())
    assert big["ratio"]["momentum"] < 0.8 and big["residual_sd_deg"] > 2 * none["residual_sd_deg"]
