"""What a sampling temperature does to a world model, measured: for each temperature (the scale of the
student's noise draws; 1.0 = the noise it was trained with) the chunk-dynamics gate, the held-push
gate, the shipped real-twin policy in the dream and, unless skipped, the closed loop from 16-frame
real clips; then one table next to the real simulator and repeat-last-frame.

    python examples/temperature_sweep.py --checkpoint DIR --temperatures 1,0.7,0.4,0.2 --out docs/results/temperature/NAME

Each measurement is the project's own command (printed in the table's JSON), run only when its JSON
is not in OUT/T<temperature>/ yet, so an interrupted sweep goes on where it stopped and a measurement
made by hand with the same command can be put there. Writes OUT/sweep.json and OUT/table.md.
About 12 min per temperature on one core (closed loop 5, chunk gate 3, dream policy 2, push 1.5).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from models.io import write_json

MEASUREMENTS = ("chunk_dynamics", "push_response", "dream_policy", "closed_loop_clip")


def commands(checkpoint: str, t: float, d: Path, threads: int, episodes: int) -> dict[str, tuple[list[str], Path]]:
    """The command of each measurement at temperature `t` and the JSON it writes."""
    py = sys.executable
    return {
        "chunk_dynamics": ([py, "-m", "evaluation.chunk_dynamics", "--checkpoint", checkpoint, "--temperature", f"{t:g}",
                            "--threads", str(threads), "--json", str(d / "chunk_dynamics.json")], d / "chunk_dynamics.json"),
        "push_response": ([py, "-m", "evaluation.push_response", "--checkpoint", checkpoint, "--temperature", f"{t:g}",
                           "--starts", "12", "--json", str(d / "push_response.json")], d / "push_response.json"),
        "dream_policy": ([py, "-m", "agents.evaluate", "--policy", "shipped", "--dream", "--checkpoint", checkpoint,
                          "--temperature", f"{t:g}", "--episodes", "20", "--threads", str(threads),
                          "--json", str(d / "dream_policy.json")], d / "dream_policy.json"),
        "closed_loop_clip": ([py, "examples/closed_loop_eval.py", "--checkpoint", checkpoint, "--temperature", f"{t:g}",
                              "--out", str(d / "closed_loop_clip"), "--world", "cartpole", "--episodes", str(episodes),
                              "--horizons", "1,2,5", "--context-frames", "16", "--threads", str(threads)],
                             d / "closed_loop_clip" / "metrics.json"),
    }


def _student(models: dict) -> dict:
    return next(v for k, v in models.items() if k.startswith("student"))


def row(t: float, d: Path) -> dict:
    """The figures of one temperature from its JSONs (a missing one is left out)."""
    out: dict = {"temperature": t}
    p = d / "chunk_dynamics.json"
    if p.is_file():
        res = json.loads(p.read_text())
        for proto, rep in res["protocols"].items():
            fit = _student(rep["models"])
            out[f"chunk_{proto}"] = {**{k: round(v, 2) for k, v in fit["ratio"].items()}, "residual_deg": round(fit["residual_sd_deg"], 2),
                                     "real_residual_deg": round(rep["real"]["residual_sd_deg"], 2), "passes": fit["passes"],
                                     "angle_error_deg_chunk1": round(fit["angle_error_deg"][0], 2)}
    p = d / "push_response.json"
    if p.is_file():
        r = _student(json.loads(p.read_text())["models"])
        out["held_push"] = {proto: {k: round(v, 2) for k, v in x["ratio"].items()} for proto, x in r["protocols"].items()}
        out["held_push"]["passes"] = r["passes"]
    p = d / "dream_policy.json"
    if p.is_file():
        r = json.loads(p.read_text())
        out["dream_policy"] = {"mean": round(r["mean"], 1), "std": round(r["std"], 1), "episodes": r["episodes"]}
    p = d / "closed_loop_clip" / "metrics.json"
    if p.is_file():
        m = json.loads(p.read_text())["methods"]
        out["closed_loop_clip"] = {who: {h: {"psnr": round(v["psnr"], 2), "angle_deg": round(v["pole_angle_deg_err"], 2),
                                             "cart_m": round(v["cart_x_m_err"], 3),
                                             **({"term_within_4": round(v["term_within_4_frames"], 2)} if "term_within_4_frames" in v else {})}
                                         for h, v in m[key].items()}
                                   for who, key in (("dream", "dream (student)"), ("repeat", "repeat_last_frame"))}
    return out


def table(rows: list[dict]) -> str:
    head = ("| temperature | chunk gate clip: push / carry-over / momentum, residual deg | image | held push pole image / clip "
            "| real-twin policy in the dream (frames) | clip closed loop 0-1 s: PSNR / angle / cart | 1-2 s |")
    lines = [head, "|" + "---|" * 7]

    def chunk(r, proto):
        c = r.get(f"chunk_{proto}")
        if not c:
            return "-"
        return (f"{c['push']:.2f} / {c['push_carry_over']:.2f} / {c['momentum']:.2f}, {c['residual_deg']:.2f}"
                f" ({'pass' if c['passes'] else 'fail'})")

    def cl(r, h):
        c = r.get("closed_loop_clip", {}).get("dream", {}).get(h)
        return f"{c['psnr']:.2f} / {c['angle_deg']:.2f} / {c['cart_m']:.3f}" if c else "-"

    for r in rows:
        hp = r.get("held_push")
        push = f"{hp['image']['pole_angle_deg']:.2f} / {hp['clip']['pole_angle_deg']:.2f}" if hp else "-"
        dp = r.get("dream_policy")
        policy = f"{dp['mean']:.1f} +- {dp['std']:.1f}" if dp else "-"
        lines.append(f"| {r['temperature']:g} | {chunk(r, 'clip')} | {chunk(r, 'image')} | {push} | {policy} | "
                     f"{cl(r, '1s')} | {cl(r, '2s')} |")
    rep = next((r["closed_loop_clip"]["repeat"] for r in rows if "closed_loop_clip" in r), None)
    if rep:
        lines.append(f"| repeat-last-frame | | | | | {rep['1s']['psnr']:.2f} / {rep['1s']['angle_deg']:.2f} / {rep['1s']['cart_m']:.3f} | "
                     f"{rep['2s']['psnr']:.2f} / {rep['2s']['angle_deg']:.2f} / {rep['2s']['cart_m']:.3f} |")
    real = next((r for r in rows if "chunk_clip" in r), None)
    if real:
        lines.append(f"| real simulator | 1 / 1 / 1, {real['chunk_clip']['real_residual_deg']:.2f} | "
                     f"1 / 1 / 1, {real.get('chunk_image', {}).get('real_residual_deg', float('nan')):.2f} | 1 / 1 | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a world-model checkpoint directory")
    p.add_argument("--temperatures", default="1,0.7,0.4,0.2", help="comma list, each in (0, 2]")
    p.add_argument("--out", required=True)
    p.add_argument("--skip", default="", help=f"comma list of measurements to leave out, of {', '.join(MEASUREMENTS)}")
    p.add_argument("--episodes", type=int, default=16, help="closed-loop episodes")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    try:
        temps = [float(x) for x in a.temperatures.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--temperatures: expected a comma list of numbers such as 1,0.4, got {a.temperatures!r}")
    bad = [t for t in temps if not 0 < t <= 2]
    if not temps or bad:
        raise SystemExit(f"--temperatures: each must be in (0, 2], got {a.temperatures!r}")
    skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    if skip - set(MEASUREMENTS):
        raise SystemExit(f"--skip: unknown {sorted(skip - set(MEASUREMENTS))}; choose from {', '.join(MEASUREMENTS)}")
    if not (Path(a.checkpoint) / "checkpoint.json").is_file():
        raise SystemExit(f"--checkpoint: {a.checkpoint!r} holds no checkpoint.json; pass a world-model checkpoint directory")
    out = Path(a.out)
    rows = []
    for t in temps:
        d = out / f"T{t:g}"
        d.mkdir(parents=True, exist_ok=True)
        for name, (cmd, made) in commands(a.checkpoint, t, d, a.threads, a.episodes).items():
            if name in skip or made.is_file():
                continue
            print(f"[temperature {t:g}] {name}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True)
        rows.append(row(t, d))
    res = {"kind": "temperature_sweep", "checkpoint": a.checkpoint,
           "command": "python examples/temperature_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv), "rows": rows}
    write_json(out / "sweep.json", res)
    (out / "table.md").write_text(f"Command: `{res['command']}`\n\n" + table(rows))
    print(table(rows))
    return res


if __name__ == "__main__":
    main()
