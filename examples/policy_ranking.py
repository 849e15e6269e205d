"""Does a dream rank policies as reality does? From `agents.evaluate` JSONs of the same policies in
the dream and in the real twin: a table of both scores and the Spearman rank correlation between
them (ties share their mean rank). A dream that scores a policy high that falls early in reality
teaches agents to be that policy.

    python examples/policy_ranking.py --pair DREAM.json:REAL.json --pair ... [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def ranks(values) -> np.ndarray:
    """1-based ranks, highest value first; tied values share their mean rank."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(-v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for x in np.unique(v):
        tie = v == x
        r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equally long score lists (Pearson's on their ranks)."""
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"spearman: needs two lists of the same length >= 3, got {len(a)} and {len(b)}")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def load_pair(spec: str) -> dict:
    dream_path, sep, real_path = spec.partition(":")
    if not sep or not dream_path or not real_path:
        raise SystemExit(f"--pair {spec!r}: expected DREAM_JSON:REAL_JSON (two agents.evaluate --json files of one policy)")
    out = {}
    for key, path in (("dream", dream_path), ("real", real_path)):
        p = Path(path)
        if not p.is_file():
            raise SystemExit(f"--pair {spec!r}: no file {path}; write it with python -m agents.evaluate ... --json {path}")
        d = json.loads(p.read_text())
        missing = [k for k in ("env", "mean", "std", "episodes") if k not in d]
        if missing:
            raise SystemExit(f"--pair {spec!r}: {path} is not an agents.evaluate result (no {', '.join(repr(k) for k in missing)})")
        out[key] = d
    if out["dream"]["env"] != "dream" or out["real"]["env"] != "real":
        raise SystemExit(f"--pair {spec!r}: the first file must score the dream and the second the real twin "
                         f"(got env {out['dream']['env']!r} and {out['real']['env']!r})")
    n = out["dream"]["episodes"]
    return {"policy": out["dream"]["policy"], "dream": out["dream"]["mean"], "dream_se": out["dream"]["std"] / np.sqrt(n),
            "dream_episodes": n, "real": out["real"]["mean"], "dream_json": dream_path, "real_json": real_path}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", action="append", required=True, help="DREAM_JSON:REAL_JSON of one policy (3 or more)")
    ap.add_argument("--json", help="write the table and the correlation here")
    a = ap.parse_args(argv)
    if len(a.pair) < 3:
        raise SystemExit(f"--pair: a ranking needs 3 or more policies, got {len(a.pair)}")
    rows = [load_pair(s) for s in a.pair]
    rho = spearman([r["dream"] for r in rows], [r["real"] for r in rows])
    for r in sorted(rows, key=lambda r: -r["real"]):
        print(f"{r['policy']:55s} real {r['real']:6.1f}   dream {r['dream']:6.1f} +- {r['dream_se']:.1f}")
    print(f"Spearman rank correlation, dream vs real, {len(rows)} policies: {rho:+.2f}")
    out = {"command": "python examples/policy_ranking.py " + " ".join(f"--pair {s}" for s in a.pair)
           + (f" --json {a.json}" if a.json else ""), "policies": rows, "spearman": rho}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
