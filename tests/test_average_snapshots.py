"""Post-hoc weight averaging of DMD snapshots (`examples/average_snapshots.py`)."""
import pytest
import torch

from models.dit import DiT, DiTConfig
from tests.test_evaluation import load_example


def _snapshots(tmp_path, n=3):
    stage = tmp_path / "run" / "dmd_self_forcing"
    models = []
    for i in range(n):
        torch.manual_seed(i)
        m = DiT(DiTConfig.from_size("tiny"))
        m.save_pretrained(stage / f"model_step{(i + 1) * 50}")
        models.append(m)
    return tmp_path / "run", models


def test_the_average_is_the_mean_of_every_tensor_and_its_forward_runs(tmp_path):
    avg = load_example("average_snapshots")
    run, models = _snapshots(tmp_path)
    dirs = avg.snapshots_in(run, 50, 150)
    assert [d.name for d in dirs] == ["model_step50", "model_step100", "model_step150"]
    mean = avg.average_snapshots(dirs)
    for k, v in mean.state_dict().items():
        expect = sum(m.state_dict()[k] for m in models) / 3
        torch.testing.assert_close(v, expect, rtol=1e-6, atol=1e-6)
    # weighted: all weight on one snapshot gives that snapshot
    only_last = avg.average_snapshots(dirs, weights=[0, 0, 1])
    for k, v in only_last.state_dict().items():
        torch.testing.assert_close(v, models[2].state_dict()[k])


def test_the_cli_writes_a_loadable_snapshot_and_bad_ranges_say_what_exists(tmp_path):
    avg = load_example("average_snapshots")
    run, _ = _snapshots(tmp_path)
    avg.main(["--run", str(run), "--steps", "100:150", "--out", str(tmp_path / "avg")])
    assert DiT.from_pretrained(tmp_path / "avg").config == DiTConfig.from_size("tiny")
    with pytest.raises(ValueError, match=r"kept steps: \[50, 100, 150\]"):
        avg.snapshots_in(run, 400, 600)
    other = DiT(DiTConfig.from_size("tiny", depth=3))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="different config"):
        avg.average_snapshots([run / "dmd_self_forcing" / "model_step50", tmp_path / "other"])
