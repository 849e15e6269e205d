"""Learning curves of a PPO run (``python -m agents.ppo``): episodic return against env frames.

    python examples/agent_curves.py --run runs/agents/ppo_real --out docs/results/agents/ppo_real_curve \
        --command "python -m agents.ppo --env real ..."

Reads ``returns.json`` (every training episode's return, where it ended) and ``args.json`` of
the run; writes ``OUT.json`` (the command, the run's args, every episode, a binned mean curve,
and the periodic real-twin scores of ``--eval-every``) and ``OUT.png``. x: environment frames
(chunks x frames per chunk); y: episodic return (real CartPole: frames survived; in the dream:
the reward head's sum), with the real-twin evaluations on the same axes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def binned(frames: np.ndarray, returns: np.ndarray, bins: int) -> dict:
    """Mean and std of the episodes ending in each of ``bins`` equal spans of frames."""
    edges = np.linspace(0, max(int(frames.max()), 1), bins + 1) if len(frames) else np.zeros(1)
    mids, means, stds, counts = [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (frames > lo) & (frames <= hi)
        if m.any():
            mids.append(float((lo + hi) / 2))
            means.append(float(returns[m].mean()))
            stds.append(float(returns[m].std()))
            counts.append(int(m.sum()))
    return {"frames": mids, "mean": means, "std": stds, "episodes": counts}


def curves(run: str | Path, bins: int = 40) -> dict:
    run = Path(run)
    rets = json.loads((run / "returns.json").read_text())
    args = json.loads((run / "args.json").read_text())
    F = int(rets.get("frames_per_chunk", 4))
    frames = np.asarray(rets["global_step"], dtype=np.int64) * F
    returns = np.asarray(rets["episodic_return"], dtype=np.float64)
    return {"run": str(run), "env": rets["env"], "world": rets["world"], "frames_per_chunk": F, "args": args,
            "episodes": {"frames": frames.tolist(), "return": returns.tolist(), "length": rets["episodic_length"]},
            "binned": binned(frames, returns, bins), "real_evals": rets.get("evals", [])}


def plot(c: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    ep, b = c["episodes"], c["binned"]
    label = "training episodes (real twin)" if c["env"] == "real" else "training episodes (dream, reward head)"
    ax.scatter(ep["frames"], ep["return"], s=2, alpha=0.15, color="tab:blue")
    ax.plot(b["frames"], b["mean"], color="tab:blue", label=label + ", binned mean")
    if c["real_evals"]:
        ev = c["real_evals"]
        x = [e["frames"] for e in ev]
        m, s = np.array([e["real_mean"] for e in ev]), np.array([e["real_std"] for e in ev])
        ax.errorbar(x, m, yerr=s, color="tab:red", marker="o", ms=3, capsize=2,
                    label=f"real CartPole-v1, {len(ev[0]['real_returns'])} episodes (deterministic)")
    ax.set_xlabel("environment frames (4 per decision)")
    ax.set_ylabel("episodic return (frames survived, cap 500)" if c["env"] == "real" else "episodic return")
    ax.set_title(f"PPO on {c['world']}, trained in the {'real twin' if c['env'] == 'real' else 'dream'}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a `python -m agents.ppo` --out directory")
    p.add_argument("--out", required=True, help="output path without suffix: writes OUT.json and OUT.png")
    p.add_argument("--command", default=None, help="the training command, recorded in the JSON")
    p.add_argument("--bins", type=int, default=40)
    a = p.parse_args(argv)
    c = {"command": a.command, **curves(a.run, a.bins)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(c, indent=1))
    plot(c, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')} ({len(c['episodes']['return'])} episodes)")
    return c


if __name__ == "__main__":
    main()
