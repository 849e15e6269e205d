"""How sure is a chunk-dynamics figure? Bootstrap intervals from saved gate JSONs, and paired
differences between models gated on the same starts.

`python -m evaluation.chunk_dynamics` writes every start's pole angles to its JSON, so nothing is
re-run here: the starts are resampled (with replacement), the real and each model's linear fit
are redone on every resample, and the gated ratios (push, carry-over, momentum; model / real) get
a 90% interval. Gate runs with the same `--starts` and `--chunks` share starts and scripts (both
are seeded), so two models' ratios can be compared *paired*: the interval of the difference, per
resample, in distance from the real ratio of 1 (negative = the second model is closer).

    python -m evaluation.gate_intervals docs/results/chunk_dynamics/v7.json docs/results/dmd_v8/eval/cd_v8n_159.json
    python -m evaluation.gate_intervals A.json B.json --against "student causvid_env/checkpoints/cartpole [v7.json]" --json out.json

`--jitter 0.5,1,2` adds what the fit makes of pure reading noise: the real angles with independent
Gaussian jitter (degrees, per chunk reading) added and refitted. Jitter inflates the residual and,
because one noisy reading enters two consecutive changes with opposite signs, pulls the momentum
ratio below 1 by itself; a model's momentum is read against the jitter its residual implies.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from evaluation.chunk_dynamics import GATED, LIMIT_DEG, draw_interval, fit_chunk_dynamics, ratio_draws
from models.io import write_json

__all__ = ["load_gate_angles", "interval_table", "jitter_bias", "main"]


def load_gate_angles(paths: list[str]) -> dict:
    """{protocol: {"start", "real", "scripts", "models": {label: angles}}} from chunk-dynamics JSONs.
    Every file must share starts and scripts (same --starts/--chunks); the VAE bound is read once.
    With several files every model is labelled `name [file name]` (one model may be gated in several)."""
    out: dict = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"gate JSON {path!r} not found; write one with `python -m evaluation.chunk_dynamics --json FILE`")
        d = json.loads(p.read_text())
        if d.get("kind") != "chunk_dynamics":
            raise ValueError(f"{path}: not a chunk-dynamics gate JSON (kind={d.get('kind')!r})")
        scripts = np.asarray(d["scripts"])
        for protocol, rep in d["protocols"].items():
            ang = rep["angles_deg"]
            slot = out.setdefault(protocol, {"start": np.asarray(ang["start"]), "real": np.asarray(ang["real"]),
                                             "scripts": scripts, "models": {}})
            if slot["scripts"].shape != scripts.shape or not np.array_equal(slot["scripts"], scripts) \
                    or not np.allclose(slot["real"], np.asarray(ang["real"]), atol=1e-3):
                raise ValueError(f"{path}: its starts or scripts differ from {paths[0]}'s; compare gate runs made with the same "
                                 "--starts and --chunks")
            for name, a in ang.items():
                if name in ("start", "real"):
                    continue
                if name.startswith("VAE bound"):
                    slot["models"].setdefault(name, np.asarray(a))
                else:
                    label = f"{name} [{p.name}]" if len(paths) > 1 else name
                    slot["models"][label] = np.asarray(a)
    return out


def interval_table(gates: dict, against: str | None = None, boots: int = 1000, seed: int = 0) -> dict:
    """Per protocol and model: each gated ratio's point value is not recomputed here (the JSON has it);
    this gives its bootstrap median and 90% interval, and, for every model but `against`, the paired
    difference in |ratio - 1| against the `against` model (90% interval; < 0: closer to the real)."""
    result: dict = {}
    for protocol, g in gates.items():
        draws = ratio_draws(g["real"], g["models"], g["start"], g["scripts"], boots=boots, seed=seed)
        base = against if against is not None else next((n for n in draws if not n.startswith("VAE bound")), None)
        if base is not None and base not in draws:
            raise ValueError(f"--against {base!r}: no such model in the {protocol} gate; choose from {sorted(draws)}")
        rows = {}
        for name, dr in draws.items():
            row = {k: {"median": round(float(np.nanmedian(v)), 3), "ci90": draw_interval(v)} for k, v in dr.items()}
            if base is not None and name != base:
                for k in GATED:
                    diff = np.abs(dr[k] - 1.0) - np.abs(draws[base][k] - 1.0)
                    row[k]["closer_than_against"] = {
                        "distance_change_ci90": draw_interval(diff),
                        "p_closer": round(float(np.nanmean(diff < 0)), 3)}
            rows[name] = row
        result[protocol] = {"against": base, "models": rows}
    return result


def jitter_bias(real: np.ndarray, start_angles: np.ndarray, scripts: np.ndarray, sigmas: list[float], repeats: int = 20,
                seed: int = 0) -> list[dict]:
    """The gated ratios and the residual a model would get if it were the real simulator plus
    independent reading jitter of sd `sigma` degrees per chunk (mean over `repeats` draws)."""
    real, th0 = np.asarray(real, np.float64), np.asarray(start_angles, np.float64)
    keep = np.abs(real) < LIMIT_DEG
    rc = fit_chunk_dynamics(real, th0, scripts, keep)["coefficients"]
    rng = np.random.default_rng(seed)
    out = []
    for sigma in sigmas:
        draws = []
        for _ in range(repeats):
            f = fit_chunk_dynamics(real + rng.normal(0.0, sigma, real.shape), th0, scripts, keep)
            draws.append([f["coefficients"][k] / rc[k] for k in GATED] + [f["residual_sd_deg"]])
        m = np.mean(draws, 0)
        out.append({"jitter_deg": float(sigma), "ratio": dict(zip(GATED, m[:3].round(3).tolist())), "residual_sd_deg": round(float(m[3]), 3)})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Bootstrap intervals of chunk-dynamics gate ratios from saved JSONs, with paired "
                                            "differences between models gated on the same starts.")
    p.add_argument("json_files", nargs="+", help="chunk-dynamics JSONs (python -m evaluation.chunk_dynamics --json)")
    p.add_argument("--against", default=None, help="the model the others are compared with (default: the first non-VAE model)")
    p.add_argument("--boots", type=int, default=1000)
    p.add_argument("--jitter", default="", help="comma list of reading-noise sds (deg) to show the fit's bias from, e.g. 0.5,1,2")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.boots < 100:
        raise ValueError(f"--boots must be at least 100 for a 90% interval, got {a.boots}")
    try:
        sigmas = [float(x) for x in a.jitter.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--jitter must be a comma list of numbers (degrees), got {a.jitter!r}") from None
    if any(x < 0 for x in sigmas):
        raise ValueError(f"--jitter values must be >= 0 degrees, got {a.jitter!r}")
    gates = load_gate_angles(a.json_files)
    table = interval_table(gates, a.against, a.boots)
    for protocol, t in table.items():
        print(f"[{protocol}] paired against: {t['against']}")
        for name, row in t["models"].items():
            cells = []
            for k in GATED:
                c = row[k]
                s = f"{k} {c['median']:.2f} " + (f"({c['ci90'][0]:.2f}-{c['ci90'][1]:.2f})" if c["ci90"] else "(too few fits)")
                if "closer_than_against" in c:
                    s += f" P(closer)={c['closer_than_against']['p_closer']:.2f}"
                cells.append(s)
            print(f"  {name}: " + "; ".join(cells))
        if sigmas:
            g = gates[protocol]
            t["jitter_bias"] = jitter_bias(g["real"], g["start"], g["scripts"], sigmas)
            for row in t["jitter_bias"]:
                print(f"  real + jitter {row['jitter_deg']:g} deg: " + ", ".join(f"{k} {v:.2f}x" for k, v in row["ratio"].items())
                      + f", residual {row['residual_sd_deg']:.2f} deg")
    if a.json:
        write_json(a.json, {"kind": "gate_intervals", "files": a.json_files, "boots": a.boots, "protocols": table})
    return table


if __name__ == "__main__":
    main()
