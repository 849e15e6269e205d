"""Learning curves of the gates over DMD snapshots: every `cd_RUN_STEP.json` (chunk dynamics, 72
starts), `push_RUN_STEP.json` (held push, 12 starts) and `pid_RUN_STEP.json` (the real-twin policy,
20 episodes in the dream) in an eval folder, as `examples/gate_dmd_snapshot.sh RUN_DIR STEP EVAL_DIR` writes them,
collected into OUT/curves.json and OUT/curves.png, with the shipped v7 (the start of every run) at
step 0 and each chunk-gate ratio's 90% bootstrap interval over starts (`evaluation.gate_intervals`).

    python examples/dmd_gate_curves.py --eval docs/results/dmd_v8/eval --out docs/results/dmd_v8
    python examples/dmd_gate_curves.py --eval docs/results/dmd_v9/eval --out docs/results/dmd_v9 --branch v9h=v8n@300 --branch v9g=v8n@159
"""
import argparse
import json
import re
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evaluation.chunk_dynamics import ratio_intervals

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--eval", required=True, action="append", help="folder of cd_/push_/pid_RUN_STEP.json files (repeatable: a run's earlier sessions)")
p.add_argument("--out", required=True, help="folder for curves.json and curves.png")
p.add_argument("--branch", action="append", default=[], metavar="RUN=PARENT@STEP",
               help="RUN was branched from PARENT's state at STEP: its curve starts from PARENT's gate there (default: from v7)")
a = p.parse_args()
branches = {}
for b in a.branch:
    m = re.fullmatch(r"(\w+)=(\w+)@(\d+)", b)
    if not m:
        raise SystemExit(f"--branch {b!r}: expected RUN=PARENT@STEP, e.g. v9g=v8n@159")
    branches[m.group(1)] = (m.group(2), m.group(3))
evs, here = [Path(e) for e in a.eval], Path(a.out)
for ev in evs:
    if not ev.is_dir():
        raise SystemExit(f"--eval {ev}: no such folder; point it at the gate JSONs of the snapshots (examples/gate_dmd_snapshot.sh writes them)")
here.mkdir(parents=True, exist_ok=True)
v7_cd = json.loads(Path("docs/results/chunk_dynamics/v7.json").read_text())
v7_push = json.loads(Path("docs/results/push_response/v7_h200_dmd_abc.json").read_text())


def cd_row(d, name_part):
    out = {}
    scripts = np.asarray(d["scripts"])
    for proto, rep in d["protocols"].items():
        for name, fit in rep["models"].items():
            if name_part in name:
                ang = rep["angles_deg"]
                ci = fit.get("ratio_ci90") or ratio_intervals(ang["real"], ang[name], ang["start"], scripts)
                out[proto] = {"push": fit["ratio"]["push"], "carry_over": fit["ratio"]["push_carry_over"],
                              "momentum": fit["ratio"]["momentum"], "residual_deg": fit["residual_sd_deg"],
                              "angle_error_deg_chunk6": fit["angle_error_deg"][-1],
                              "ci90": {"push": ci["push"], "carry_over": ci["push_carry_over"], "momentum": ci["momentum"]}}
    return out


def push_row(d, name_part):
    for name, m in d["models"].items():
        if name_part in name:
            return {p: r["ratio"] for p, r in m["protocols"].items()}
    return None


rows = {"v7 (start)": {"0": {"chunk": cd_row(v7_cd, "checkpoints/cartpole"), "push": push_row(v7_push, "final16_A"),
                             "policy_in_dream": json.loads(Path("docs/results/agents/shipped_policy_in_dream.json").read_text())["mean"]}}}
for f in sorted(f for ev in evs for f in ev.glob("cd_*.json")):
    m = re.fullmatch(r"cd_(\w+?)_(\d+)\.json", f.name)
    if m is None:  # not a snapshot's gate
        continue
    ev, run, step = f.parent, m.group(1), m.group(2)
    r = {"chunk": cd_row(json.loads(f.read_text()), f"runs/{run}/")}
    pf, df = ev / f"push_{run}_{step}.json", ev / f"pid_{run}_{step}.json"
    if pf.exists():
        r["push"] = push_row(json.loads(pf.read_text()), f"runs/{run}/")
    if df.exists():
        r["policy_in_dream"] = json.loads(df.read_text())["mean"]
    rows.setdefault(run, {})[step] = r
(here / "curves.json").write_text(json.dumps({"source": [str(ev) for ev in evs] if len(evs) > 1 else str(evs[0]), "runs": rows}, indent=1))

fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
start0 = ("v7 (start)", "0")
for run, steps in rows.items():
    if run.startswith("v7"):
        continue
    parent = branches.get(run, start0)
    if parent[0] not in rows or parent[1] not in rows[parent[0]]:
        raise SystemExit(f"--branch {run}={parent[0]}@{parent[1]}: no gate of {parent[0]} at step {parent[1]} in {[str(e) for e in evs]}")
    first = rows[parent[0]][parent[1]]
    xs = sorted((int(s), s) for s in steps)
    st = [int(parent[1])] + [x for x, _ in xs]
    for proto, ls in (("clip", "-"), ("image", "--")):
        for i, key in ((0, "push"), (1, "carry_over"), (2, "momentum")):
            pts = [first["chunk"][proto]] + [steps[s]["chunk"][proto] for _, s in xs]
            y = np.array([q[key] for q in pts])
            ci = np.array([q["ci90"][key] or [np.nan, np.nan] for q in pts])
            ax[i].errorbar(st, y, yerr=[y - ci[:, 0], ci[:, 1] - y], fmt="o" + ls, capsize=2, label=f"{run} {proto}")
    ax[3].plot(st, [first.get("policy_in_dream", float("nan"))] + [steps[s].get("policy_in_dream", float("nan")) for _, s in xs],
               marker="o", label=run)
for a_, t in zip(ax, ("chunk gate: same-chunk push / real (90% interval)", "chunk gate: carry-over / real (90% interval)",
                      "chunk gate: momentum / real (90% interval)", "real-twin policy in the dream (frames, 20 eps)")):
    a_.set_title(t, fontsize=9)
    a_.set_xlabel("DMD steps from v7 (batch 32)")
for a_ in ax[:3]:
    a_.axhspan(0.7, 1.3, color="g", alpha=0.1)
ax[0].legend(fontsize=7)
ax[3].legend(fontsize=7)
fig.tight_layout()
fig.savefig(here / "curves.png", dpi=110)
print(json.dumps({r: {s: {"clip_push": v["chunk"]["clip"]["push"], "image_push": v["chunk"]["image"]["push"],
                          "dream": v.get("policy_in_dream")} for s, v in st.items()} for r, st in rows.items()}, indent=0))
