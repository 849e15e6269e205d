"""The dream-physics evaluation: the real twin read by the shipped probe sits at the probe's floor; the
command runs end to end on a tiny dream and writes every script's summary."""
import json

import numpy as np

from evaluation.dream_physics import chunk_errors, main, play, summarise
from evaluation.probe import load_probe, ProbeConfig, StateProbe
from causvid_env.checkpoint import default_checkpoint_dir
from tests.helpers import tiny_checkpoint

PROMPT = "a brown pole balanced on a black cart"


def test_the_real_twin_follows_the_physics_to_the_probes_noise():
    probe, _ = load_probe(default_checkpoint_dir("cartpole") / "probe")
    eps = play(None, "cartpole", "wiggle", [0, 1], 8, None, False, "real")
    assert all(len(acts) >= 2 for _, acts in eps)
    res = summarise(chunk_errors(probe, eps, PROMPT, "cartpole"))
    assert res["all"]["chunks"] >= 4
    assert res["all"]["pole_deg"] < 1.5 and res["all"]["cart_m"] < 0.05, res  # the probe's floor (0.3 deg MAE per frame)
    # a chunk drawn frozen is off by the motion the physics gives it
    frames, acts = eps[0]
    frozen = frames.copy()
    frozen[3] = frozen[2][-1:]
    err = chunk_errors(probe, [(frozen, acts)], PROMPT, "cartpole")[0]
    assert err[2, 1] > 2 * np.nanmean(chunk_errors(probe, [(frames, acts)], PROMPT, "cartpole")[0][:, 1])


def test_the_command_runs_on_a_tiny_dream(tmp_path):
    ck = tiny_checkpoint(tmp_path / "ck")
    StateProbe(ProbeConfig.for_world("cartpole", channels=(4, 8, 8), hidden=16)).eval().save_pretrained(ck / "probe")
    out = tmp_path / "physics.json"
    res = main(["--checkpoint", str(ck), "--starts", "2", "--chunks", "3", "--scripts", "left,random,balancer", "--json", str(out),
                "--no-progress"])
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m evaluation.dream_physics")
    assert set(res["models"]) == {"real twin", f"checkpoint {ck}"}
    for per in res["models"].values():
        assert {"left", "random", "balancer"} <= set(per) and "chunks_1_3" in per["left"]


def test_the_balancer_keeps_the_real_pole_up_longer_than_a_blind_script():
    probe, _ = load_probe(default_checkpoint_dir("cartpole") / "probe")
    bal = play(None, "cartpole", "balancer", [0, 1], 12, None, False, "real", probe)
    left = play(None, "cartpole", "left", [0, 1], 12, None, False, "real")
    assert min(len(a) for _, a in bal) > max(len(a) for _, a in left)
    assert set(a for _, acts in bal for a in acts) == {0, 1}


def test_unknown_scripts_are_refused_by_name(capsys):
    import pytest
    with pytest.raises(SystemExit):
        main(["--scripts", "hover"])
    assert "--scripts: unknown ['hover']" in capsys.readouterr().err
