"""How sure is a chunk-dynamics figure? Bootstrap intervals from saved gate JSONs, and paired
differences between models gated on the same starts.

`python -m evaluation.chunk_dynamics` writes every start's pole angles to its JSON, so nothing is
re-run here: the starts are resampled (with replacement), the real and each model's linear fit
are redone on every resample, and the gated ratios (push, carry-over, momentum; model / real) get
a 90% interval. Gate runs with the same `--starts` and `--chunks` share starts and scripts (both
are seeded), so two models' ratios can be compared *paired*: the interval of the difference, per
resample, in distance from the real ratio of 1 (negative = the second model is closer).

    python -m evaluation.gate_intervals docs/results/chunk_dynamics/v7.json docs/results/dmd_v8/eval/cd_v8n_159.json
    python -m evaluation.gate_intervals A.json B.json --against "student causvid_env/checkpoints/cartpole" --json out.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from evaluation.chunk_dynamics import GATED, ratio_draws
from models.io import write_json

__all__ = ["load_gate_angles", "interval_table", "main"]


def load_gate_angles(paths: list[str]) -> dict:
    """{protocol: {"start", "real", "scripts", "models": {label: angles}}} from chunk-dynamics JSONs.
    Every file must share starts and scripts (same --starts/--chunks); the VAE bound is read once.
    A model in several files keeps one entry per file (labelled `name [file]`)."""
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
                    label = name if name not in slot["models"] else f"{name} [{p.name}]"
                    slot["models"][label] = np.asarray(a)
    return out


def interval_table(gates: dict, against: str | None = None, boots: int = 1000, seed: int = 0) -> dict:
    """Per protocol and model: each gated ratio's point value is not recomputed here (the JSON has it);
    this gives its bootstrap median and 90% interval, and, for every model but `against`, the paired
    difference in |ratio - 1| against the `against` model (90% interval; < 0: closer to the real)."""
    result: dict = {}
    for protocol, g in gates.items():
        draws = {name: ratio_draws(g["real"], a, g["start"], g["scripts"], boots=boots, seed=seed) for name, a in g["models"].items()}
        base = against if against is not None else next((n for n in draws if not n.startswith("VAE bound")), None)
        if base is not None and base not in draws:
            raise ValueError(f"--against {base!r}: no such model in the {protocol} gate; choose from {sorted(draws)}")
        rows = {}
        for name, dr in draws.items():
            row = {k: {"median": round(float(np.nanmedian(v)), 3),
                       "ci90": np.nanpercentile(v, [5, 95]).round(3).tolist()} for k, v in dr.items()}
            if base is not None and name != base:
                for k in GATED:
                    diff = np.abs(dr[k] - 1.0) - np.abs(draws[base][k] - 1.0)
                    row[k]["closer_than_against"] = {
                        "distance_change_ci90": np.nanpercentile(diff, [5, 95]).round(3).tolist(),
                        "p_closer": round(float(np.nanmean(diff < 0)), 3)}
            rows[name] = row
        result[protocol] = {"against": base, "models": rows}
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Bootstrap intervals of chunk-dynamics gate ratios from saved JSONs, with paired "
                                            "differences between models gated on the same starts.")
    p.add_argument("json_files", nargs="+", help="chunk-dynamics JSONs (python -m evaluation.chunk_dynamics --json)")
    p.add_argument("--against", default=None, help="the model the others are compared with (default: the first non-VAE model)")
    p.add_argument("--boots", type=int, default=1000)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.boots < 100:
        raise ValueError(f"--boots must be at least 100 for a 90% interval, got {a.boots}")
    table = interval_table(load_gate_angles(a.json_files), a.against, a.boots)
    for protocol, t in table.items():
        print(f"[{protocol}] paired against: {t['against']}")
        for name, row in t["models"].items():
            cells = []
            for k in GATED:
                c = row[k]
                s = f"{k} {c['median']:.2f} ({c['ci90'][0]:.2f}-{c['ci90'][1]:.2f})"
                if "closer_than_against" in c:
                    s += f" P(closer)={c['closer_than_against']['p_closer']:.2f}"
                cells.append(s)
            print(f"  {name}: " + "; ".join(cells))
    if a.json:
        write_json(a.json, {"kind": "gate_intervals", "files": a.json_files, "boots": a.boots, "protocols": table})
    return table


if __name__ == "__main__":
    main()
