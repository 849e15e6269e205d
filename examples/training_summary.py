"""Steps and wall time of every stage of a pipeline run, as JSON for the results page.

    python examples/training_summary.py --run runs/cartpole --json docs/results/training.json [--command "..."]

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

from evaluation.report import write_json

STAGES = ("heads", "teacher", "causal_teacher", "ode_pairs", "ode_init", "dmd_self_forcing", "dmd_teacher_forcing",
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
            shards = sorted(d.glob("pairs_*.safetensors"), key=lambda p: p.stat().st_mtime)
            if len(shards) > 1:  # first shard's own time estimated as the mean of the others
                span = shards[-1].stat().st_mtime - shards[0].stat().st_mtime
                wall = span * len(shards) / (len(shards) - 1)
        steps = info.get("steps") or info.get("pairs")
        note = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("steps",) and not isinstance(v, (dict, list)))
        out.append({"stage": name, "steps": steps, "wall_s": wall, "wall": _hms(wall), "note": note})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--command", default=None, help="the pipeline command that made the run (default: from its pipeline_config.json)")
    a = p.parse_args(argv)
    run = Path(a.run)
    res = {"run": str(run), "command": a.command or f"python -m distill.pipeline --out {run}",
           "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, one torch thread per job",
           "stages": summarize(run)}
    write_json(a.json, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
