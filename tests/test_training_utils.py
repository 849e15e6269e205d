"""The stage runner's wall-clock budget (`max_seconds`): a stage given minutes, not steps."""
import time
from dataclasses import dataclass

import pytest
import torch

from distill.training_utils import StageRunner, is_done, load_training_state


@dataclass
class Cfg:
    steps: int = 10_000
    seed: int = 0
    save_every: int = 1_000
    log_every: int = 5
    max_seconds: float = 0.0


def _train(stage_dir, cfg, pause=0.01):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    runner = StageRunner(stage_dir, "budget", cfg, distributed=False)
    if runner.done:
        return runner, None
    runner.resume({"net": net}, {"opt": opt})

    def step(i, rng):
        time.sleep(pause)
        loss = net(torch.from_numpy(rng.normal(size=(4, 2))).float()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}, {}

    steps = runner.run(step)
    runner.finish({"steps": steps})
    return runner, steps


def test_a_stage_out_of_time_ends_saved_and_done_at_the_step_it_reached(tmp_path):
    runner, steps = _train(tmp_path / "s", Cfg(max_seconds=0.3))
    assert runner.stopped_early
    assert 5 <= steps < 200, steps  # ~30 steps of 10 ms in 0.3 s, far from 10,000
    assert is_done(tmp_path / "s")
    saved, _ = load_training_state(tmp_path / "s", {"net": torch.nn.Linear(2, 1)}, {})
    assert saved == steps  # the state on disk is the step reached, though save_every was not hit
    again, none = _train(tmp_path / "s", Cfg(max_seconds=0.3))  # a rerun skips the finished stage
    assert again.done and none is None


def test_no_budget_runs_every_step(tmp_path):
    runner, steps = _train(tmp_path / "s", Cfg(steps=12, max_seconds=0.0), pause=0.0)
    assert steps == 12 and not runner.stopped_early



def test_the_training_record_counts_only_the_stages_a_session_trained(tmp_path):
    """A run that copied finished stages in from another run records only its own (`--stages`)."""
    import json

    from tests.test_evaluation import load_example

    summary = load_example("training_summary")
    run = tmp_path / "run"
    for stage, steps in (("heads", 1200), ("dmd_self_forcing", 40)):
        (run / stage).mkdir(parents=True)
        (run / stage / "DONE").write_text(json.dumps({"steps": steps}))
        (run / stage / "log.jsonl").write_text("".join(json.dumps({"step": s, "time": s * 2.0}) + "\n" for s in (10, 20, 40)))
    (run / "pipeline_config.json").write_text(json.dumps({"heads": {"batch_size": 64}, "dmd": {"batch_size": 8}}))
    every = summary.session_entry(run, "s", 1, None, "")
    own = summary.session_entry(run, "s", 1, None, "", device="H200", only=("dmd_self_forcing",))
    assert [s["stage"] for s in every["stages"]] == ["heads", "dmd_self_forcing"]
    assert [(s["stage"], s["steps"], s["samples"]) for s in own["stages"]] == [("dmd_self_forcing", 40, 320)]
    assert "gpu_hours" in own["stages"][0] and "cpu_hours" not in own["stages"][0]
    totals = summary.totals([every, own])
    assert totals["dmd_self_forcing"]["steps"] == 80 and totals["heads"]["sessions"] == 1
    shared = summary.session_entry(run, "s", 1, None, "", device="H200", only=("dmd_self_forcing",), share=0.25)
    assert shared["stages"][0]["gpu_hours"] == round(80.0 * 0.25 / 3600, 3) and shared["device_share"] == 0.25
    with pytest.raises(ValueError, match="device-share"):
        summary.session_entry(run, "s", 1, None, "", device="H200", share=0.0)
    # two data-parallel processes (torchrun) each draw the stage's batch: twice the samples and the CPU time
    ddp = summary.session_entry(run, "s", 2, None, "", only=("dmd_self_forcing",))
    assert ddp["stages"][0]["samples"] == 640 and ddp["stages"][0]["cpu_hours"] == round(80.0 * 2 / 3600, 3)


def test_a_stopped_dmd_stage_counts_its_last_logged_step(tmp_path):
    import json

    from tests.test_evaluation import load_example

    summary = load_example("training_summary")
    run = tmp_path / "run"
    (run / "dmd_self_forcing").mkdir(parents=True)
    (run / "dmd_self_forcing" / "log.jsonl").write_text("".join(json.dumps({"step": s, "time": s * 3.0}) + "\n" for s in (5, 10, 15)))
    (run / "pipeline_config.json").write_text(json.dumps({"dmd": {"batch_size": 8}}))
    e = summary.session_entry(run, "s", 1, None, "", only=("dmd_self_forcing",))
    assert [(s["stage"], s["steps"], s["samples"]) for s in e["stages"]] == [("dmd_self_forcing", 15, 120)]
    assert "not finished" in e["stages"][0]["note"] and e["stages"][0]["cpu_hours"] == round(45.0 / 3600, 3)


def test_a_run_resumed_in_a_later_session_records_only_the_steps_it_added(tmp_path):
    import json

    from tests.test_evaluation import load_example

    summary = load_example("training_summary")
    run, record = tmp_path / "run", tmp_path / "record.json"
    (run / "dmd_self_forcing").mkdir(parents=True)
    (run / "pipeline_config.json").write_text(json.dumps({"dmd": {"batch_size": 8}}))
    log = run / "dmd_self_forcing" / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "time": s * 3.0}) + "\n" for s in (5, 10)))
    summary.update_record(record, run, "day 1", 2, None, "", only=("dmd_self_forcing",))
    # resumed next session: the clock restarts, the steps go on
    log.write_text(log.read_text() + "".join(json.dumps({"step": s, "time": (s - 10) * 3.0}) + "\n" for s in (15, 20, 25)))
    rec = summary.update_record(record, run, "day 2", 2, None, "", only=("dmd_self_forcing",))
    day2 = rec["sessions"][-1]["stages"][0]
    assert (day2["steps"], day2["samples"], day2["wall_s"]) == (15, 15 * 8 * 2, 45.0)
    assert day2["cpu_hours"] == round(45.0 * 2 / 3600, 3) and "continued" in day2["note"]
    assert rec["cumulative"]["dmd_self_forcing"]["steps"] == 25
    rec = summary.update_record(record, run, "day 2", 2, None, "", only=("dmd_self_forcing",))  # re-recording replaces it
    assert rec["cumulative"]["dmd_self_forcing"]["steps"] == 25
    # a branch of the run (its state copied at step 20 into a new run, BRANCH.json beside it) counts its own steps only
    branch = tmp_path / "branch"
    (branch / "dmd_self_forcing").mkdir(parents=True)
    (branch / "pipeline_config.json").write_text(json.dumps({"dmd": {"batch_size": 8}}))
    (branch / "dmd_self_forcing" / "BRANCH.json").write_text(json.dumps({"from": str(run), "step": 20}))
    (branch / "dmd_self_forcing" / "log.jsonl").write_text("".join(json.dumps({"step": s, "time": (s - 20) * 3.0}) + "\n" for s in (25, 30)))
    e = summary.session_entry(branch, "day 2", 2, None, "", only=("dmd_self_forcing",))["stages"][0]
    assert (e["steps"], e["samples"], e["wall_s"]) == (10, 10 * 8 * 2, 30.0) and "branched" in e["note"]


def test_a_state_without_a_module_resumes_only_where_that_module_is_optional(tmp_path):
    from distill.training_utils import save_training_state

    net, extra_net = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    save_training_state(tmp_path, 3, {"net": net}, {})
    with pytest.raises(ValueError, match="no state for \\['ema'\\]"):
        load_training_state(tmp_path, {"net": torch.nn.Linear(2, 1), "ema": extra_net}, {})
    fresh = torch.nn.Linear(2, 1)
    before = extra_net.weight.clone()
    step, extra = load_training_state(tmp_path, {"net": fresh, "ema": extra_net}, {}, optional=("ema",))
    assert step == 3 and extra["missing_modules"] == ["ema"]
    assert torch.equal(fresh.weight, net.weight) and torch.equal(extra_net.weight, before)


def test_a_packed_state_resumes_its_modules_and_step_with_fresh_optimisers(tmp_path):
    from distill.training_utils import pack_training_state, save_training_state

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 2)).sum().backward()
    opt.step()
    save_training_state(tmp_path / "s", 7, {"net": net}, {"opt": opt})
    with pytest.raises(ValueError, match="no state for the optimiser 'other'"):  # an unpacked state still asks for all of them
        load_training_state(tmp_path / "s", {"net": torch.nn.Linear(2, 1)}, {"opt": opt, "other": opt})
    info = pack_training_state(tmp_path / "s" / "state.pt", tmp_path / "packed" / "state.pt")
    assert info["step"] == 7 and info["modules"] == ["net"]
    assert info["bytes"] < (tmp_path / "s" / "state.pt").stat().st_size
    fresh = torch.nn.Linear(2, 1)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=3e-4)
    step, extra = load_training_state(tmp_path / "packed", {"net": fresh}, {"opt": fresh_opt})
    assert step == 7 and extra["optimizers_dropped"] and torch.equal(fresh.weight, net.weight)
    assert fresh_opt.state_dict()["state"] == {} and fresh_opt.param_groups[0]["lr"] == 3e-4  # its own rate, no moments


def test_a_half_packed_state_without_an_optional_module_resumes_close_to_its_weights(tmp_path):
    from distill.training_utils import pack_training_state, save_training_state

    net, ema = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    save_training_state(tmp_path / "s", 5, {"net": net, "ema": ema}, {})
    with pytest.raises(ValueError, match="drop: \\['nope'\\]"):
        pack_training_state(tmp_path / "s" / "state.pt", tmp_path / "p" / "state.pt", drop=("nope",))
    half = pack_training_state(tmp_path / "s" / "state.pt", tmp_path / "p" / "state.pt", half=True, drop=("ema",))
    full = pack_training_state(tmp_path / "s" / "state.pt", tmp_path / "f" / "state.pt")
    assert half["modules"] == ["net"] and half["bytes"] < full["bytes"]
    fresh, fresh_ema = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    step, extra = load_training_state(tmp_path / "p", {"net": fresh, "ema": fresh_ema}, {}, optional=("ema",))
    assert step == 5 and extra["missing_modules"] == ["ema"] and fresh.weight.dtype == torch.float32
    assert torch.allclose(fresh.weight, net.weight, rtol=1e-3, atol=1e-4) and not torch.equal(fresh.weight, net.weight)
