"""Append the training, action-following and agent sections to docs/RESULTS.md from their JSON.

    python examples/append_results.py --run runs/cartpole --results docs/results --out docs/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    run, res = Path(a.run), Path(a.results)
    lines = ["", "## Training run (`python -m distill.pipeline --world cartpole --out runs/cartpole --preset default --threads 1`, seed 0)", ""]
    vae = json.loads((run / "vae" / "DONE").read_text())
    lines.append(f"- VAE: {vae['params']:,} params, {vae['steps']} steps; held-out PSNR {vae['heldout_psnr']:.1f} dB "
                 f"({vae['heldout_psnr_nonwhite']:.1f} dB on non-white pixels), SSIM {vae['heldout_ssim']:.3f}")
    for stage in ("heads", "teacher", "ode_pairs", "ode_init", "dmd_teacher_forcing"):
        done = run / stage / "DONE"
        if done.is_file():
            lines.append(f"- {stage}: {json.loads(done.read_text())}")
    lines += ["- data card: [DATA_CARD.md](DATA_CARD.md); curves: [training_curves.png](training_curves.png) "
              "(`python examples/plot_training.py --run runs/cartpole --out docs/training_curves.png`)", ""]
    af = res / "action_following.json"
    if af.is_file():
        d = json.loads(af.read_text())
        lines += [f"## Action following (`python -m causvid_env.action_following --json {af}`)", "",
                  f"Held push for {d['seconds']} s from the same real start (seeds {d['seeds']}), final frame read by the state probe.", "",
                  "| world | push | pole angle deg | cart x m | terminated within (of %d) |" % len(d["seeds"]), "|---|---|---|---|---|"]
        for w in ("dream", "real"):
            for side in ("right", "left"):
                r = d[w][side]
                lines.append(f"| {w} | {side} | {r['pole_angle_deg']:.1f} | {r['cart_x_m']:.2f} | {r['terminated_within']} |")
        lines += ["", f"Gap right - left: dream {d['dream']['gap_pole_angle_deg']:.1f} deg / {d['dream']['gap_cart_x_m']:.2f} m; "
                  f"real {d['real']['gap_pole_angle_deg']:.1f} deg / {d['real']['gap_cart_x_m']:.2f} m.", ""]
    rows = []
    for name, label in (("ppo_dream_in_real", "PPO trained only in the dream"), ("ppo_real_in_real", "PPO trained on the real twin"),
                        ("random_in_real", "random")):
        f = res / f"{name}.json"
        if f.is_file():
            d = json.loads(f.read_text())
            rows.append(f"| {label} | {d.get('mean', float('nan')):.1f} | {d.get('std', float('nan')):.1f} | {d.get('min')} | {d.get('max')} |")
    if rows:
        lines += ["## Agents scored in the real CartPole-v1 (100 episodes, frames survived, cap 500)", "",
                  "Commands: `examples/reproduce_results.sh` (stream b); PPO in the dream 4,096 chunk steps x 16 envs, on the real twin 16,384.", "",
                  "| agent | mean | std | min | max |", "|---|---|---|---|---|", *rows, ""]
    out = Path(a.out)
    out.write_text(out.read_text() + "\n".join(lines) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
