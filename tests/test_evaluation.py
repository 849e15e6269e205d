"""Closed-loop evaluation, benchmarks, ablation and the results page on tiny random models.

Sizes are cut to the bone (fractions of a second of real time, 2-4 Euler steps): these tests check
the plumbing, the schemas and the sanity of the metrics, not the numbers.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causvid_env.checkpoint import load_world_model
from causvid_env.worlds import get_world
from evaluation.metrics import evaluate_methods
from evaluation.probe import ProbeConfig, StateProbe, fit_probe, load_probe, probe_frames_from_rollouts, train_probe
from evaluation.rollouts import Generated, _chunk_actions, make_policy, rollout_twin
from models.actions import space_to_dict
from models.dit import DiT, DiTConfig
from models.metrics import ssim, ssim_per_frame

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def tiny_dit(ckpt: Path, seed: int) -> DiT:
    """A random tiny DiT matching the checkpoint's latents (a stand-in teacher)."""
    s = load_world_model(ckpt).student.config
    torch.manual_seed(seed)
    spec = get_world("cartpole")
    net = DiT(DiTConfig.from_size("tiny", latent_channels=s.latent_channels, latent_height=s.latent_height, latent_width=s.latent_width,
                                  action_space=space_to_dict(spec.make_action_space()), frames_per_latent=s.frames_per_latent,
                                  latent_frames_per_chunk=s.latent_frames_per_chunk))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # wake the zero-initialised outputs
    return net.eval()


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe") / "probe"
    train_probe("cartpole", steps=30, episodes=2, heldout_episodes=1, max_frames=64, out=d)
    return d


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_ckpt):
    """A pipeline-shaped run directory: checkpoint, teacher, causal teacher and ODE-init student."""
    import shutil
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_ckpt, run / "checkpoint")
    tiny_dit(tiny_ckpt, 1).save_pretrained(run / "teacher" / "model")
    tiny_dit(tiny_ckpt, 2).save_pretrained(run / "causal_teacher" / "model")
    load_world_model(tiny_ckpt).student.save_pretrained(run / "ode_init" / "model")
    return run


@pytest.fixture(scope="module")
def closed_loop(tmp_path_factory, tiny_ckpt, probe_dir):
    cl = load_example("closed_loop_eval")
    out = tmp_path_factory.mktemp("closed_loop")
    res = cl.run(cl.Args(checkpoint=str(tiny_ckpt), out=str(out), episodes=3, horizons="0.16,0.48", probe=str(probe_dir),
                         policies="held_random", variants="default", video_episodes=1, batch_size=2), command="pytest")
    return out, res


# ------------------------------------------------------------------------------------- metrics
def test_identical_frames_score_perfectly(probe_dir):
    probe, _ = load_probe(probe_dir)
    ep = rollout_twin("cartpole", seed=3, policy="balance", max_seconds=0.32)
    assert ep.frames.shape == (4 + 16, 64, 96, 3) and ep.states.shape == (20, 4)
    same = Generated(ep.frames[ep.F:].copy(), ep.rewards[ep.F:].copy(), ep.terminated[ep.F:].copy())
    table, _ = evaluate_methods({"copy": [same]}, [ep], [0.16, 0.32], 50, probe)
    row = table["copy"]["0.16s"]
    assert math.isinf(row["psnr"]) and math.isinf(row["psnr_fg"]) and row["ssim"] == pytest.approx(1.0)
    assert row["reward_mae"] == 0 and row["term_frame_acc"] == 1 and row["return_mae"] == 0
    # the probe's error on a perfect copy is exactly its error on the real frames
    assert row["pole_angle_deg_err"] == pytest.approx(table["real_frames (probe floor)"]["0.16s"]["pole_angle_deg_err"])
    shifted = Generated(np.roll(ep.frames[ep.F:], 3, axis=2))
    t2, _ = evaluate_methods({"shift": [shifted]}, [ep], [0.32], 50)
    assert 0 < t2["shift"]["0.32s"]["psnr"] < 60 and t2["shift"]["0.32s"]["ssim"] < 1
    assert "pole_angle_deg_err" not in t2["shift"]["0.32s"]  # no probe given


def test_fast_ssim_matches_reference():
    ep = rollout_twin("cartpole", seed=1, policy="held_random", max_seconds=0.16)
    noisy = np.clip(ep.frames.astype(int) + np.random.default_rng(0).integers(-30, 30, ep.frames.shape), 0, 255).astype(np.uint8)
    ref = np.array([ssim(a, b) for a, b in zip(ep.frames, noisy)])
    assert np.allclose(ssim_per_frame(ep.frames, noisy), ref, atol=1e-4)


def test_twin_follows_policies_and_script():
    bal = rollout_twin("cartpole", seed=0, policy="balance", max_seconds=1.0)
    assert bal.n == 52 and bal.first_termination() is None  # the controller keeps the pole up
    held = rollout_twin("cartpole", seed=0, policy="held_random", max_seconds=30.0)
    assert held.n % 4 == 0 and held.n < 30 * 50  # falls and hits the run-on limit long before 30 s
    assert held.first_termination() is not None and held.terminated[held.F + held.first_termination()]
    a = np.asarray([_chunk_actions(held, k) for k in range(held.n_chunks)]).ravel()
    assert np.array_equal(a, held.actions[held.F:])
    with pytest.raises(ValueError, match="policy"):
        make_policy("teleport", get_world("cartpole"), None, np.random.default_rng(0))


def test_probe_save_load_and_errors(probe_dir, tmp_path):
    probe, info = load_probe(probe_dir)
    assert {"pole_angle_deg_mae", "cart_x_m_mae", "train_frames", "train_seconds"} <= set(info)
    frames, states = probe_frames_from_rollouts("cartpole", 1, 5, max_frames=32)
    p = probe.predict(frames)
    assert p.shape == (len(frames), 2) and np.isfinite(p).all()
    again = StateProbe.from_pretrained(probe_dir)
    assert np.allclose(again.predict(frames), p)
    with pytest.raises(ValueError, match="no probe targets"):
        ProbeConfig.for_world("pendulum")
    with pytest.raises(ValueError, match="frames"):
        probe.predict(frames[..., :2])
    # learning works: a few steps already beat predicting zero on the training frames
    fitted, ev_ = fit_probe(frames, states, frames, states, steps=60, batch_size=16, config=ProbeConfig.for_world("cartpole"))
    zero = np.abs(fitted.targets(states)).mean(0)
    assert ev_["pole_angle_deg_mae"] < zero[0] or ev_["cart_x_m_mae"] < zero[1]


# ------------------------------------------------------------------------------------- scripts
def test_closed_loop_eval_outputs(closed_loop):
    out, res = closed_loop
    for f in ("metrics.json", "table.md", "error_vs_horizon.png", "strip.png", "dream_vs_real.mp4"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    data = json.loads((out / "metrics.json").read_text())
    assert {"command", "args", "probe", "methods", "episodes", "timing", "horizons_s"} <= set(data)
    assert set(data["methods"]) == {"dream (student)", "repeat_last_frame", "vae_reconstruction", "simulator_from_still_frame",
                                    "real_frames (probe floor)"}
    first, last = data["methods"]["dream (student)"]["0.16s"], data["methods"]["dream (student)"]["0.48s"]
    for key in ("psnr", "psnr_fg", "ssim", "pole_angle_deg_err", "cart_x_m_err", "reward_mae", "term_frame_acc",
                "term_timing_mae_frames", "term_missed", "term_false", "return_mae", "episodes", "frames"):
        assert key in first, key
    # held pushes make the real pole fall away from the start: copying the start frame gets worse with time,
    # and so does a random model's dream (the probe reads nothing sensible in it while the truth moves on)
    rep = data["methods"]["repeat_last_frame"]
    assert rep["0.48s"]["pole_angle_deg_err"] > rep["0.16s"]["pole_angle_deg_err"]
    assert last["pole_angle_deg_err"] >= first["pole_angle_deg_err"]
    assert rep["0.16s"]["psnr"] > first["psnr"]  # a random dream is worse than copying the context
    assert "| horizon |" in (out / "table.md").read_text() and "dream (student)" in (out / "table.md").read_text()
    assert all(e["policy"] == "held_random" for e in data["episodes"])


def test_benchmark_quick(run_dir, tmp_path):
    bm = load_example("benchmark")
    path = tmp_path / "bench.json"
    res = bm.run(bm.Args(json=str(path), checkpoint=str(run_dir / "checkpoint"), teacher=str(run_dir / "teacher"), quick=True))
    data = json.loads(path.read_text())
    assert {"latency", "student_full_context", "kv_cache", "vector_env", "real_env", "memory", "ratios"} <= set(data)
    assert set(data["vector_env"]) == set(data["vector_env_last_frame"]) == {"1", "2"}
    parts = data["student_full_context"]["breakdown_ms"]
    assert all(v > 0 for v in parts.values()) and parts["vae_decode_last_frame"] < parts["vae_decode_all_frames"]
    prec = data["student_precision"]
    assert prec["bfloat16"]["ms_per_chunk"] > 0 and prec["float16"]["psnr_vs_float32_first_half"] > 10
    assert data["latency"]["student_first_chunk_s"] > 0 and data["latency"]["teacher_clip_s"] > 0
    assert data["memory"]["peak_rss_MiB"] > 0 and all(r["ratio"] > 0 for r in data["ratios"])
    assert "| measurement |" in bm.format_table(res)
    assert data["device"] == "cpu" and data["device_name"]
    with pytest.raises(ValueError, match="--device"):
        bm.run(bm.Args(json=str(path), checkpoint=str(run_dir / "checkpoint"), teacher=str(run_dir / "teacher"), quick=True,
                       device="cuda" if not torch.cuda.is_available() else "nonsense"))


def test_kv_cache_benchmark_quick(tmp_path):
    kv = load_example("kv_cache_benchmark")
    res = kv.run(kv.Args(quick=True, json=str(tmp_path / "kv.json")))
    assert res["cache_ms_per_chunk"] > 0 and res["recompute_ms_per_chunk"] > 0
    assert res["tokens_in_context"] == 8 * 24 and json.loads((tmp_path / "kv.json").read_text())["recompute_over_cache"] > 0


def test_ablation_rows_and_skips(run_dir, probe_dir, tmp_path):
    ab = load_example("ablation")
    res = ab.run(ab.Args(run=str(run_dir), out=str(tmp_path), episodes=2, horizons="0.08,0.16", teacher_steps=2, probe=str(probe_dir),
                         batch_size=2))
    rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    for name in ("many-step bidirectional teacher", "many-step causal teacher", ab.MAIN_ROW,
                 "ODE init only", "repeat_last_frame", "vae_reconstruction", "simulator_from_still_frame"):
        assert "psnr" in rows[name]["0.08s"], name
    assert rows["no ODE init"] == {"skipped": "model not found in the run directory"}
    assert "skipped" in rows["causal-teacher DMD"]
    md = (tmp_path / "ablation.md").read_text()
    assert "many-step causal teacher" in md and "no ODE init: skipped" in md
    assert set(res["timing"]) >= {"many-step bidirectional teacher", "many-step causal teacher"}


def test_compose_results(closed_loop, tmp_path):
    cr = load_example("compose_results")
    res = tmp_path / "results"
    (res / "closed_loop").mkdir(parents=True)
    (res / "closed_loop" / "metrics.json").write_text((Path(closed_loop[0]) / "metrics.json").read_text())
    text = cr.compose(res, tmp_path / "RESULTS.md").read_text()
    assert "## Closed loop: the shipped checkpoint (default window" in text and "dream (student)" in text
    assert "## Issue 13 targets" in text and "repeat-last-frame" in text
    assert "_Not run:" in text and "benchmark.json missing" in text  # missing inputs say how to make them


def test_real_clip_protocol_shifts_episodes_and_seeds_the_dream(tiny_ckpt):
    """context_frames=16: the dream is seeded with the still chunk and 3 real chunks, and every
    method is scored on the frames after that clip (the VAE bound exactly the unshifted one's tail)."""
    from evaluation.rollouts import real_rollouts, repeat_last_frame, student_generate, vae_reconstruction, with_real_clip

    model = load_world_model(tiny_ckpt)
    whole = real_rollouts("cartpole", 2, 0.64, seed=5, policies=["noisy_balance"])  # 12 frames longer: the clip's 3 chunks
    clip = real_rollouts("cartpole", 2, 0.4, seed=5, policies=["noisy_balance"], context_frames=16)
    for w, c in zip(whole, clip):
        assert c.prefix_frames.shape[0] == 16 and np.array_equal(c.prefix_frames[-4:], c.frames[:4])
        np.testing.assert_array_equal(c.frames, w.frames[12:12 + len(c.frames)])  # same seed: the same real episode
        assert c.n == 20  # 0.4 s after the clip
    rec_whole, rec_clip = vae_reconstruction(model, whole), vae_reconstruction(model, clip)
    np.testing.assert_array_equal(rec_clip[0].frames[:8], rec_whole[0].frames[12:20])
    assert np.array_equal(repeat_last_frame(clip)[0].frames[0], clip[0].prefix_frames[-1])
    gen = student_generate(model, "cartpole", clip, batch_size=2)
    assert gen[0].frames.shape == (20, 64, 96, 3)
    with pytest.raises(ValueError, match="context_frames"):
        real_rollouts("cartpole", 1, 0.4, context_frames=6)
    with pytest.raises(ValueError, match="chunks"):
        with_real_clip(whole[0], 0)


def test_teacher_rolls_out_from_real_clips(tiny_ckpt, probe_dir, tmp_path):
    """The bidirectional teacher seeded with a real clip: the clip's chunks carry their own actions
    in its conditioning (then the script), only the frames after the clip are scored, and
    closed_loop_eval --teacher-steps adds a teacher row to the clip protocol."""
    from evaluation.rollouts import PromptTexts, _episode_cond, real_rollouts, teacher_generate
    from models.actions import ActionCodec

    model = load_world_model(tiny_ckpt)
    teacher = tiny_dit(tiny_ckpt, 1)
    clip = real_rollouts("cartpole", 2, 0.4, seed=5, policies=["held_random"], context_frames=16)
    codec = ActionCodec(teacher.config.action_space)
    cond = _episode_cond(teacher, PromptTexts(), clip, 4 + clip[0].n_chunks, codec, with_null=False)
    feats, null = cond.action_feats.numpy(), cond.action_null.numpy()
    ep = clip[0]
    assert null[0, :4].all() and not null[0, 4:].any()  # the still chunk has no action, every later frame has one
    np.testing.assert_array_equal(feats[0, 4:16], codec.to_features(ep.prefix_actions[4:16]))  # the clip's own pushes
    np.testing.assert_array_equal(feats[0, 16:20], codec.to_features(ep.actions[4:8]))  # then the script
    gen = teacher_generate(teacher, model, clip, num_steps=2, guidance_action=1.0, clip_frames=8, batch_size=2)
    assert gen[0].frames.shape == (ep.n, 64, 96, 3) and gen[0].terminated.shape == (ep.n,)
    image = real_rollouts("cartpole", 1, 0.4, seed=5, policies=["held_random"])
    with pytest.raises(ValueError, match="same length"):
        teacher_generate(teacher, model, clip[:1] + image, num_steps=2, batch_size=2)
    with pytest.raises(ValueError, match="image resets"):
        teacher_generate(teacher, model, clip, num_steps=2, causal=True)
    cool = teacher_generate(teacher, model, clip, num_steps=2, guidance_action=1.0, clip_frames=8, batch_size=2, temperature=0.2)
    again = teacher_generate(teacher, model, clip, num_steps=2, guidance_action=1.0, clip_frames=8, batch_size=2, temperature=1.0)
    np.testing.assert_array_equal(again[0].frames, gen[0].frames)  # 1.0 is the trained noise, the default
    assert not np.array_equal(cool[0].frames, gen[0].frames)  # a scaled start lands elsewhere
    with pytest.raises(ValueError, match="temperature"):
        teacher_generate(teacher, model, clip, num_steps=2, temperature=0.0)

    import shutil
    ck = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ck)
    cl = load_example("closed_loop_eval")
    args = dict(checkpoint=str(ck), episodes=2, horizons="0.16,0.32", probe=str(probe_dir), policies="held_random",
                variants="default", video_episodes=1, batch_size=2, context_frames=16, teacher_steps=2)
    with pytest.raises(FileNotFoundError, match="--teacher-steps"):
        cl.run(cl.Args(out=str(tmp_path / "none"), **args))
    with pytest.raises(ValueError, match="--teacher-temperature"):
        cl.run(cl.Args(out=str(tmp_path / "none"), teacher_temperature=3.0, **args))
    teacher.save_pretrained(tmp_path / "snapshot")  # --teacher DIR: a run's snapshot instead of CHECKPOINT/teacher
    res = cl.run(cl.Args(out=str(tmp_path / "snap"), teacher=str(tmp_path / "snapshot"), teacher_temperature=0.5, **args))
    assert res["args"]["teacher_temperature"] == 0.5 and res["methods"]["teacher (bidirectional)"]["0.16s"]["frames"] > 0
    teacher.save_pretrained(ck / "teacher")
    res = cl.run(cl.Args(out=str(tmp_path / "out"), **args))
    row = res["methods"]["teacher (bidirectional)"]["0.16s"]
    assert row["frames"] > 0 and "pole_angle_deg_err" in row and res["timing"]["teacher_s"] > 0


def test_temperature_sweep_tabulates_saved_measurements_and_refuses_bad_input(tiny_ckpt, tmp_path):
    """examples/temperature_sweep.py runs only what is missing: with every JSON in place it runs nothing
    and writes the table from them (student rows, not the VAE bound; baselines beside them)."""
    sweep = load_example("temperature_sweep")
    d = tmp_path / "out" / "T0.5"
    (d / "closed_loop_clip").mkdir(parents=True)
    fit = {"ratio": {"push": 0.81, "push_carry_over": 0.92, "momentum": 1.03}, "residual_sd_deg": 0.9, "passes": True,
           "angle_error_deg": [1.5, 3.0]}
    vae = {**fit, "ratio": {"push": 9.0, "push_carry_over": 9.0, "momentum": 9.0}}
    (d / "chunk_dynamics.json").write_text(json.dumps({"protocols": {p: {"real": {"residual_sd_deg": 0.7},
                                                                         "models": {"VAE bound": vae, "student x": fit}}
                                                                     for p in ("clip", "image")}}))
    (d / "push_response.json").write_text(json.dumps({"models": {"student x": {"passes": True, "protocols": {
        p: {"ratio": {"pole_angle_deg": 0.75, "cart_x_m": 0.85}} for p in ("image", "clip")}}}}))
    (d / "dream_policy.json").write_text(json.dumps({"mean": 41.25, "std": 7.5, "episodes": 20}))
    horizon = {"psnr": 26.0, "pole_angle_deg_err": 8.0, "cart_x_m_err": 0.08, "term_within_4_frames": 0.8}
    (d / "closed_loop_clip" / "metrics.json").write_text(json.dumps({"methods": {
        "dream (student)": {"1s": horizon, "2s": horizon},
        "repeat_last_frame": {"1s": {**horizon, "psnr": 22.0}, "2s": {**horizon, "psnr": 21.0}}}}))
    res = sweep.main(["--checkpoint", str(tiny_ckpt), "--temperatures", "0.5", "--out", str(tmp_path / "out")])
    r = res["rows"][0]
    assert r["chunk_clip"]["push"] == 0.81 and r["chunk_image"]["passes"] and r["held_push"]["clip"]["pole_angle_deg"] == 0.75
    assert abs(r["dream_policy"]["mean"] - 41.25) <= 0.05 and r["dream_policy"]["episodes"] == 20
    table = (tmp_path / "out" / "table.md").read_text()
    assert "0.81 / 0.92 / 1.03, 0.90 (pass)" in table and "9.00" not in table and "| repeat-last-frame |" in table
    assert "26.00 / 8.00 / 0.080" in table and "22.00 / 8.00 / 0.080" in table
    for bad, match in ((["--temperatures", "0"], "--temperatures"), (["--skip", "video"], "--skip")):
        with pytest.raises(SystemExit, match=match):
            sweep.main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o2"), *bad])
    with pytest.raises(SystemExit, match="--checkpoint"):
        sweep.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "o3")])
