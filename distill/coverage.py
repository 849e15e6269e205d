"""What a collected dataset covers: state ranges, held pushes, falls, recoveries and long balancing,
per variant. Written into the data card so a reader can see whether the data holds what players
and agents will do in the dream (DESIGN.md: a world model only knows what it saw)."""
from __future__ import annotations

import numpy as np

from causvid_env.worlds import WorldSpec


def _runs(actions: np.ndarray) -> list[int]:
    """Lengths (in chunks) of runs of the same per-chunk action."""
    if len(actions) == 0:
        return []
    change = np.flatnonzero(np.any(actions[1:] != actions[:-1], axis=tuple(range(1, actions.ndim))) if actions.ndim > 1
                            else actions[1:] != actions[:-1])
    bounds = np.concatenate([[0], change + 1, [len(actions)]])
    return np.diff(bounds).tolist()


def coverage(episodes, spec: WorldSpec) -> dict:
    """Coverage figures from episodes with per-frame `states`, `actions`, `action_mask`, `terminated`."""
    F = spec.frames_per_chunk
    names = list(spec.state_names)
    states = np.concatenate([e.states for e in episodes])
    out: dict = {"frames": int(len(states)), "state_quantiles": {}}
    for i, n in enumerate(names or [f"s{i}" for i in range(states.shape[1])]):
        q = np.quantile(states[:, i], [0.01, 0.5, 0.99])
        out["state_quantiles"][n] = [float(v) for v in q]
    runs = []
    for e in episodes:
        acts = e.actions[e.action_mask][::F]
        runs += _runs(np.asarray(acts))
    runs = np.asarray(runs) if runs else np.zeros(0)
    out["held_actions"] = {"chunks_in_runs_>=3": float(runs[runs >= 3].sum() / max(runs.sum(), 1)),
                           "runs_>=6_chunks": int((runs >= 6).sum()), "longest_run_chunks": int(runs.max()) if len(runs) else 0}
    if spec.name == "cartpole":
        theta = np.degrees(np.abs(states[:, 2]))
        bins = [0, 3, 6, 12, 24, 45, 1e9]
        hist = np.histogram(theta, bins=bins)[0] / len(theta)
        out["pole_angle_abs_deg_fraction"] = {f"{lo:g}-{hi:g}" if hi < 1e8 else f">{lo:g}": float(h)
                                              for lo, hi, h in zip(bins[:-1], bins[1:], hist)}
        recoveries, falls, long_balance = 0, 0, 0
        for e in episodes:
            th = np.degrees(np.abs(e.states[:, 2]))
            falls += int(bool(e.terminated.any()))
            # a recovery: the pole leans past 6 degrees and comes back under 2 before any termination
            first_term = int(np.flatnonzero(e.terminated)[0]) if e.terminated.any() else len(th)
            seg = th[:first_term]
            above = np.flatnonzero(seg > 6)
            if len(above) and (seg[above[0]:] < 2).any():
                recoveries += 1
            long_balance += int(first_term / spec.fps >= 10)
        out["episodes"] = {"total": len(episodes), "falls_(standard_termination)": falls, "recoveries_from_>6deg": recoveries,
                           "balanced_>=10s_before_termination": long_balance}
    per_variant: dict[str, int] = {}
    for e in episodes:
        per_variant[str(e.variant)] = per_variant.get(str(e.variant), 0) + len(e.states)
    out["frames_per_variant"] = per_variant
    return out


def coverage_markdown(cov: dict) -> list[str]:
    lines = ["", "## Coverage", ""]
    q = cov["state_quantiles"]
    lines.append("- state 1% / 50% / 99% quantiles: " + "; ".join(f"{k} {a:.2f} / {b:.2f} / {c:.2f}" for k, (a, b, c) in q.items()))
    h = cov["held_actions"]
    lines.append(f"- held actions: {100 * h['chunks_in_runs_>=3']:.0f}% of chunks are in runs of >= 3 equal actions; "
                 f"{h['runs_>=6_chunks']} runs of >= 6 chunks; longest {h['longest_run_chunks']} chunks")
    if "pole_angle_abs_deg_fraction" in cov:
        lines.append("- |pole angle| (degrees), fraction of frames: " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in cov["pole_angle_abs_deg_fraction"].items()))
        e = cov["episodes"]
        lines.append(f"- episodes: {e['falls_(standard_termination)']}/{e['total']} fall (standard termination), "
                     f"{e['recoveries_from_>6deg']} recover from > 6 degrees to < 2 degrees, "
                     f"{e['balanced_>=10s_before_termination']} balance >= 10 s before terminating")
    lines.append("- frames per variant: " + ", ".join(f"{k} {v}" for k, v in sorted(cov["frames_per_variant"].items())))
    return lines
