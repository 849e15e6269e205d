"""Summarise PPO real-twin runs from their run directories into one JSON (the commands as run)."""
import json, sys
import numpy as np
from pathlib import Path
PIN = "taskset -c 1 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SDL_VIDEODRIVER=dummy "
RUNS = {
 "ppo_real": ("the previous shipped policy (rows encoder, defaults)", "python -m agents.ppo --world cartpole --env real --total-steps 250000 --eval-every 50 --eval-episodes 10 --out runs/agents/ppo_real --no-progress", None),
 "ppo_real_b1024": ("rows, 8x128 steps per update, 4 epochs x 4 minibatches; stopped by hand (critic explained variance ~0)", "python -m agents.ppo --world cartpole --env real --total-steps 180224 --num-steps 128 --update-epochs 4 --num-minibatches 4 --eval-every 22 --eval-episodes 10 --out runs/agents/ppo_real_b1024 --no-progress", "stopped"),
 "ppo_real_rs": ("rows, reward 0.1 per decision, 4x4; stopped by hand for the rows_rel run", "python -m agents.ppo --world cartpole --env real --total-steps 204800 --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --eval-every 40 --eval-episodes 10 --out runs/agents/ppo_real_rs --no-progress", "stopped"),
 "ppo_real_rel": ("rows_rel, reward 0.1 per decision, 4x4: the new shipped policy", "python -m agents.ppo --world cartpole --env real --total-steps 204800 --encoder rows_rel --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --eval-every 40 --eval-episodes 10 --out runs/agents/ppo_real_rel --no-progress", None),
 "ppo_real_rel_ent": ("rows_rel as ppo_real_rel, entropy coefficient 0.03", "python -m agents.ppo --world cartpole --env real --total-steps 204800 --encoder rows_rel --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --eval-every 40 --eval-episodes 10 --out runs/agents/ppo_real_rel_ent --no-progress", None),
 "ppo_real_warm995": ("rows_rel_ent warm-started from the shipped policy, gamma 0.995, learning rate 1e-4; stopped by hand for the pose encoder", "python -m agents.ppo --world cartpole --env real --total-steps 204800 --encoder rows_rel --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --gamma 0.995 --learning-rate 1e-4 --init-from causvid_env/checkpoints/cartpole/policy --eval-every 40 --eval-episodes 10 --out runs/agents/ppo_real_warm995 --no-progress", "stopped"),
 "ppo_real_pose_nopush": ("pose encoder before the push features (cart column and lean, differences, second differences: 12 features); stopped by hand; run with --out runs/agents/ppo_real_pose, then renamed", "python -m agents.ppo --world cartpole --env real --total-steps 204800 --encoder pose --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --eval-every 40 --eval-episodes 10 --out runs/agents/ppo_real_pose --no-progress", "stopped"),
 "ppo_real_pose": ("pose encoder with the pushes decoded from the cart's curvature (16 features), otherwise as ppo_real_rel_ent", "python -m agents.ppo --world cartpole --env real --total-steps 204800 --encoder pose --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --eval-every 40 --eval-episodes 10 --out runs/agents/ppo_real_pose --no-progress", None),
}
# runs whose directories are gone keep their entries from the previous summary
old = json.loads(Path(sys.argv[1]).read_text())["runs"] if Path(sys.argv[1]).is_file() else {}
out = {"made_by": "python docs/results/agents/summarise_runs.py docs/results/agents/ppo_real_runs.json", "made_from": "runs/agents/<run>/{log.jsonl,returns.json,args.json}", "pinned_as": PIN.strip(), "runs": {}}
for name, (what, cmd, status) in RUNS.items():
    d = Path("runs/agents") / name
    if not (d / "returns.json").is_file():
        if name in old:
            out["runs"][name] = old[name]
        continue
    rows = [json.loads(l) for l in open(d / "log.jsonl")]
    upd = [r for r in rows if "losses/entropy" in r]
    rets = json.loads((d / "returns.json").read_text())
    R, S = np.array(rets["episodic_return"]), np.array(rets["global_step"])
    last = S >= S.max() - 25_000
    ent = [(r["global_step"], round(r["losses/entropy"], 4)) for r in upd]
    out["runs"][name] = {
        "what": what, "command": cmd, "status": status or "completed",
        "decisions": int(upd[-1]["global_step"]), "wall_minutes": round(rows[-1]["time"] / 60, 1),
        "real_evals_10_episodes": [(e["global_step"], e["real_mean"]) for e in rets["evals"]],
        "train_episodes": int(len(R)), "train_mean_last_25k_decisions": round(float(R[last].mean()), 1),
        "train_frac_under_40_frames_last_25k": round(float((R[last] < 40).mean()), 3),
        "entropy_first_at_or_below_0.05": next((s for s, e in ent if e <= 0.05), None),
        "explained_variance_mean_last_20_updates": round(float(np.nanmean([r["losses/explained_variance"] for r in upd[-20:]])), 3),
    }
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
for k, v in out["runs"].items():
    print(k, v["status"], v["decisions"], v["wall_minutes"], v["real_evals_10_episodes"][-3:], v["train_mean_last_25k_decisions"], v["entropy_first_at_or_below_0.05"], v["explained_variance_mean_last_20_updates"])
