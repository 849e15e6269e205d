"""Steps and wall time of every stage of a pipeline run, as JSON for the results page, and the
cumulative record of a world model trained across sessions that warm-start from each other.

    python examples/training_summary.py --run runs/cartpole --json docs/results/training.json [--command "..."]
    python examples/training_summary.py --run runs/v3 --record docs/results/training_record.json --session 2026-12-02 \
        [--gate docs/results/push_response/teacher_curve.json] [--processes 1] [--stages dmd_self_forcing]

With --record, this session's entry (steps, samples = steps x the stage's batch from the run's
pipeline_config.json x the data-parallel processes, CPU-hours = wall x processes, or GPU-hours with
--device NAME for a run on a lent GPU, the push-response figures) replaces any entry of the same --session, and the totals over
all sessions are recomputed.

Wall time per stage comes from its `log.jsonl` (each record holds seconds since the stage process
started; a resumed stage starts a new segment, and segments are summed), or from file times for
the stages without a log (ODE pairs). Nothing is re-measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from models.io import write_json

STAGES = ("vae", "vae_decoder", "heads", "state_head", "teacher", "causal_teacher", "ode_pairs", "ode_init", "dmd_self_forcing", "dmd_teacher_forcing",
          "ablations/no_ode_init/dmd_self_forcing", "ablations/causal_teacher/dmd_self_forcing")


def wall_seconds(log: Path) -> float | None:
    if not log.is_file():
        return None
    total, last = 0.0, 0.0
    for line in log.read_text().splitlines():
        t = json.loads(line).get("time")
        if t is None:
            continue
        if t < last:  # a resumed process restarted the clock
            total += last
        last = t
    return total + last


def _hms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def summarize(run: Path) -> list[dict]:
    out = []
    for name in STAGES:
        d = run / name
        done = d / "DONE"
        if not done.is_file():
            continue
        info = json.loads(done.read_text() or "{}")
        wall = wall_seconds(d / "log.jsonl")
        if name == "ode_pairs":
            shards = sorted([*d.glob("pairs_*.safetensors"), *d.glob("contrast_*.safetensors")], key=lambda p: p.stat().st_mtime)
            if len(shards) > 1:  # first shard's own time estimated as the mean of the others
                span = shards[-1].stat().st_mtime - shards[0].stat().st_mtime
                wall = span * len(shards) / (len(shards) - 1)
        steps = info.get("steps") or info.get("pairs")
        note = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("steps",) and not isinstance(v, (dict, list)))
        out.append({"stage": name, "steps": steps, "wall_s": wall, "wall": _hms(wall), "note": note})
    return out


BATCH_KEYS = {"vae": "vae", "vae_decoder": "vae_decoder", "teacher": "teacher", "ode_init": "ode_init", "dmd_self_forcing": "dmd",
              "heads": "heads", "state_head": "state_head"}


def session_entry(run: Path, session: str, processes: int, gate: dict | None, note: str, device: str = "cpu",
                  only: tuple[str, ...] | None = None, share: float = 1.0, counted: dict | None = None) -> dict:
    """One session's stages with batch sizes, samples and CPU-hours (GPU-hours when `device` is a GPU's name).
    `only`: the stages this session trained (a run that copied finished stages in from another run
    counts only its own); None: every finished stage. `share`: the part of the device the run held
    (1/3 for one of three runs side by side on one GPU), so concurrent runs add up to the device's time.
    Only what this session added is counted: a stage branched from another run's state (`BRANCH.json`:
    {"from", "step"}) leaves out the steps before the branch, and `counted` ({stage: (steps, wall_s)},
    what earlier sessions' entries for this run already count, `counted_before`) is left out of a
    stage resumed in a later session."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"--device-share: expected a fraction in (0, 1], got {share}")
    hours = "cpu_hours" if device == "cpu" else "gpu_hours"
    cfg = json.loads((run / "pipeline_config.json").read_text())
    counted = counted or {}

    def row(s: dict) -> dict:
        section = BATCH_KEYS.get(s["stage"])
        batch = cfg[section]["batch_size"] if section else None
        # data-parallel processes (torchrun) each draw a batch per step
        return s | {"batch_size": batch, "samples": (s["steps"] or 0) * batch * processes if batch else None,
                    hours: round(s["wall_s"] * processes * share / 3600, 3) if s["wall_s"] else None}

    finished = summarize(run)
    stages = [s for s in finished if only is None or s["stage"] in only]
    # a training stage still running (or stopped) has no DONE: count its last logged step
    for name in STAGES:
        d = run / name
        if (only is None or name in only) and name not in {s["stage"] for s in finished} and (d / "log.jsonl").is_file():
            last = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()][-1]
            wall = wall_seconds(d / "log.jsonl")
            stages.append({"stage": name, "steps": last["step"], "wall_s": wall, "wall": _hms(wall),
                           "note": f"not finished: its last logged step (resumes from {name}/state.pt)"})
    for s in stages:
        b = run / s["stage"] / "BRANCH.json"
        if b.is_file() and s["steps"] is not None:
            info = json.loads(b.read_text())
            s["steps"] -= int(info["step"])
            s["note"] = (s.get("note") or "") + f" (branched from {info['from']} at step {info['step']}, counted there)"
        if s["stage"] in counted:
            steps0, wall0 = counted[s["stage"]]
            if (s["steps"] or 0) < steps0:
                raise ValueError(f"{run} {s['stage']}: {s['steps']} steps now, but earlier sessions already count {steps0}; "
                                 "a run can only grow: record a new run directory under a new --run")
            s["steps"] -= steps0
            s["wall_s"] = max((s["wall_s"] or 0.0) - wall0, 0.0)
            s["wall"] = _hms(s["wall_s"])
            s["note"] = (s.get("note") or "") + f" (continued: {steps0} earlier steps counted in earlier sessions)"
    return {"session": session, "run": str(run), "init_from": cfg.get("init_from") or None, "processes": processes, "device": device,
            **({"device_share": share} if share != 1.0 else {}), "stages": [row(s) for s in stages], "push_response": gate, "note": note}


def counted_before(run: Path, earlier: list[dict]) -> dict:
    """{stage: (steps, wall_s)} that earlier sessions' entries for the same run already count."""
    out: dict = {}
    for e in earlier:
        if e["run"] == str(run):
            for s in e["stages"]:
                steps0, wall0 = out.get(s["stage"], (0, 0.0))
                out[s["stage"]] = (steps0 + (s["steps"] or 0), wall0 + (s["wall_s"] or 0.0))
    return out


def totals(sessions: list[dict]) -> dict:
    """Per stage, summed over sessions: steps, samples, CPU-hours and GPU-hours."""
    out: dict = {}
    for e in sessions:
        for s in e["stages"]:
            t = out.setdefault(s["stage"], {"steps": 0, "samples": 0, "cpu_hours": 0.0, "gpu_hours": 0.0, "sessions": 0})
            t["steps"] += s["steps"] or 0
            t["samples"] += s["samples"] or 0
            for h in ("cpu_hours", "gpu_hours"):
                t[h] = round(t[h] + (s.get(h) or 0.0), 3)
            t["sessions"] += 1
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--json", default=None, help="write this run's stage table here")
    p.add_argument("--command", default=None, help="the pipeline command that made the run (default: from its pipeline_config.json)")
    p.add_argument("--record", default=None, help="the cumulative JSON across sessions (created if missing)")
    p.add_argument("--session", default=None, help="with --record: a name for this session, e.g. its date")
    p.add_argument("--processes", type=int, default=1, help="with --record: training processes (one torch thread each)")
    p.add_argument("--gate", default=None, help="with --record: this session's push-response JSON (evaluation.push_response)")
    p.add_argument("--device", default="cpu", help="with --record: 'cpu', or the GPU's name for a run on a lent GPU (GPU-hours)")
    p.add_argument("--stages", default=None, help="with --record: comma list of the stages this session trained "
                   "(default: every finished stage in --run, copied-in ones included)")
    p.add_argument("--device-share", type=float, default=1.0, help="with --record: the part of the device this run held "
                   "(e.g. 0.333 for one of three runs side by side on one GPU)")
    p.add_argument("--note", default="")
    a = p.parse_args(argv)
    only = None
    if a.stages:
        only = tuple(x.strip() for x in a.stages.split(",") if x.strip())
        unknown = [x for x in only if x not in STAGES]
        if unknown:
            raise ValueError(f"--stages: unknown stage(s) {unknown}; known stages are {list(STAGES)}")
    run = Path(a.run)
    if a.record:
        if not a.session:
            raise ValueError("--session: required with --record (a name for this session, e.g. its date)")
        return update_record(Path(a.record), run, a.session, a.processes, a.gate, a.note, a.device, only, a.device_share)
    if not a.json:
        raise ValueError("--json: required (or --record with --session)")
    res = {"run": str(run), "command": a.command or f"python -m distill.pipeline --out {run}",
           "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, one torch thread per job",
           "stages": summarize(run)}
    write_json(a.json, res)
    print(json.dumps(res, indent=2))
    return res


def update_record(path: Path, run: Path, session: str, processes: int, gate_json: str | None, note: str, device: str = "cpu",
                  only: tuple[str, ...] | None = None, share: float = 1.0) -> dict:
    record = json.loads(path.read_text()) if path.is_file() else {"sessions": []}
    gate = None
    if gate_json:
        g = json.loads(Path(gate_json).read_text())
        gate = {"file": gate_json, "curve": g.get("curve"),
                "models": {k: {p: v["protocols"][p]["ratio"] for p in v["protocols"]} for k, v in g.get("models", {}).items()}}
    earlier = [e for e in record["sessions"] if e["session"] != session]
    entry = session_entry(run, session, processes, gate, note, device, only, share, counted_before(run, earlier))
    record["sessions"] = earlier + [entry]
    record["cumulative"] = totals(record["sessions"])
    write_json(path, record)
    print(json.dumps(record["cumulative"], indent=2))
    return record


if __name__ == "__main__":
    main()
