"""Collect the gates of every DMD snapshot of this session's runs (eval/*.json, made by
snap.sh as runs/eval8/*.json: chunk dynamics at 72 starts, held push at 12, the real-twin policy for 20
episodes in the dream) into curves.json and curves.png here. v7 (the start of every run) is step 0."""
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = Path(__file__).parent
ev = Path(sys.argv[1] if len(sys.argv) > 1 else here / "eval")
v7_cd = json.loads(Path("docs/results/chunk_dynamics/v7.json").read_text())
v7_push = json.loads(Path("docs/results/push_response/v7_h200_dmd_abc.json").read_text())


def cd_row(d, name_part):
    out = {}
    for proto, rep in d["protocols"].items():
        for name, fit in rep["models"].items():
            if name_part in name:
                out[proto] = {"push": fit["ratio"]["push"], "carry_over": fit["ratio"]["push_carry_over"],
                              "momentum": fit["ratio"]["momentum"], "residual_deg": fit["residual_sd_deg"],
                              "angle_error_deg_chunk6": fit["angle_error_deg"][-1]}
    return out


def push_row(d, name_part):
    for name, m in d["models"].items():
        if name_part in name:
            return {p: r["ratio"] for p, r in m["protocols"].items()}
    return None


# where each run stopped (its final model's step), as the training record counts it
FINAL_STEPS = {Path(e["run"]).name: st["steps"] for e in json.loads(Path("docs/results/training_record.json").read_text())["sessions"]
               for st in e["stages"] if st["stage"] == "dmd_self_forcing"}
rows = {"v7 (start)": {"0": {"chunk": cd_row(v7_cd, "checkpoints/cartpole"), "push": push_row(v7_push, "final16_A"),
                             "policy_in_dream": json.loads(Path("docs/results/agents/shipped_policy_in_dream.json").read_text())["mean"]}}}
for f in sorted(ev.glob("cd_*.json")):
    m = re.match(r"cd_(\w+?)_(\d+|final)\.json", f.name)
    run, step = m.group(1), m.group(2)
    r = {"chunk": cd_row(json.loads(f.read_text()), f"runs/{run}/")}
    pf, df = ev / f"push_{run}_{step}.json", ev / f"pid_{run}_{step}.json"
    if pf.exists():
        r["push"] = push_row(json.loads(pf.read_text()), f"runs/{run}/")
    if df.exists():
        r["policy_in_dream"] = json.loads(df.read_text())["mean"]
    rows.setdefault(run, {})[step] = r
(here / "curves.json").write_text(json.dumps({"source": str(ev), "runs": rows}, indent=1))

fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
for run, steps in rows.items():
    if run.startswith("v7"):
        continue
    xs = sorted((int(s) if s != "final" else FINAL_STEPS[run], s) for s in steps)
    st = [0] + [x for x, _ in xs]
    for proto, ls in (("clip", "-"), ("image", "--")):
        ax[0].plot(st, [rows["v7 (start)"]["0"]["chunk"][proto]["push"]] + [steps[s]["chunk"][proto]["push"] for _, s in xs], ls,
                   marker="o", label=f"{run} {proto}")
        ax[1].plot(st, [rows["v7 (start)"]["0"]["chunk"][proto]["momentum"]] + [steps[s]["chunk"][proto]["momentum"] for _, s in xs],
                   ls, marker="o", label=f"{run} {proto}")
    ax[2].plot(st, [rows["v7 (start)"]["0"]["policy_in_dream"]] + [steps[s].get("policy_in_dream", float("nan")) for _, s in xs],
               marker="o", label=run)
for a, t in zip(ax, ("chunk gate: same-chunk push / real", "chunk gate: momentum / real",
                     "real-twin policy in the dream (frames, 20 eps)")):
    a.set_title(t, fontsize=9)
    a.set_xlabel("DMD steps from v7 (batch 32)")
for a in ax[:2]:
    a.axhspan(0.7, 1.3, color="g", alpha=0.1)
ax[0].legend(fontsize=7)
ax[2].legend(fontsize=7)
fig.tight_layout()
fig.savefig(here / "curves.png", dpi=110)
print(json.dumps({r: {s: {"clip_push": v["chunk"]["clip"]["push"], "image_push": v["chunk"]["image"]["push"],
                          "dream": v.get("policy_in_dream")} for s, v in st.items()} for r, st in rows.items()}, indent=0))
