"""Assemble the evaluation outputs into `docs/RESULTS.md`, with the commands that made them.

    python examples/write_results.py --closed-loop runs/eval_closed_loop/metrics.json \\
        --benchmark runs/benchmark.json --kv-cache runs/kv_cache.json --ablation runs/ablation/ablation.json \\
        --out docs/RESULTS.md

Every input is optional; a missing one becomes a line saying which command produces it. Nothing is
measured here: numbers come only from the JSON files (each holds its own `command`).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from causvid_env.evaluation import markdown_table

COMMANDS = {
    "closed_loop": "python examples/closed_loop_eval.py --checkpoint runs/cartpole/checkpoint --world cartpole --out runs/eval_closed_loop",
    "benchmark": "python examples/benchmark.py --checkpoint runs/cartpole/checkpoint --teacher runs/cartpole/teacher --json runs/benchmark.json",
    "kv_cache": "python examples/kv_cache_benchmark.py --json runs/kv_cache.json",
    "ablation": "python examples/ablation.py --run runs/cartpole --out runs/ablation",
}


def _load(path: str | Path | None) -> dict | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():  # accept the output directory of a script
        for name in ("metrics.json", "ablation.json"):
            if (p / name).is_file():
                p = p / name
                break
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such results file")
    return json.loads(p.read_text())


def _cmd(res: dict, key: str) -> str:
    return f"```\n{res.get('command') or COMMANDS[key]}\n```"


def _missing(key: str) -> str:
    return f"_Not run yet._ Produce it with:\n```\n{COMMANDS[key]}\n```\n"


def _probe_line(p: dict) -> str:
    if not p or "skipped" in p:
        return "State probe: none."
    parts = [f"{k[:-4].replace('_', ' ')} {v:.3f}" for k, v in p.items() if k.endswith("_mae")]
    return (f"State probe held-out error on real frames (mean abs, {p.get('frames', '?')} frames): " + ", ".join(parts)
            + f" -- trained on {p.get('train_frames', '?')} frames ({p.get('source', '?')}) in {p.get('train_seconds', '?')} s.")


def closed_loop_section(res: dict | None) -> str:
    out = ["## Closed loop against the real world", ""]
    if res is None:
        return "\n".join(out + [_missing("closed_loop")])
    ci = res.get("checkpoint_info", {})
    out += [_cmd(res, "closed_loop"), "",
            f"Checkpoint: preset `{ci.get('preset')}`, made by `{ci.get('command')}`.",
            f"{len(res['episodes'])} real episodes (policies: {sorted({e['policy'] for e in res['episodes']})}). "
            + res.get("horizon_semantics", ""), "", _probe_line(res.get("probe", {})), "",
            markdown_table(res["methods"], res["horizons_s"]),
            "Plots: `error_vs_horizon.png`, `strip.png`; video: `dream_vs_real.mp4` (dream | real), next to the metrics file.", ""]
    return "\n".join(out)


def benchmark_section(res: dict | None, kv: dict | None) -> str:
    out = ["## Speed", ""]
    if res is None:
        out.append(_missing("benchmark"))
    else:
        out += [_cmd(res, "benchmark"), "",
                f"CPU, {res.get('torch_threads')} thread(s); student {res.get('student_params_M', 0):.2f}M params, "
                f"teacher {res.get('teacher_params_M', 0):.2f}M params.", "",
                "| measurement | a | b | a / b |", "|---|---|---|---|"]
        out += [f"| {r['what']} | {r['a']} | {r['b']} | {r['ratio']:.2f}x |" for r in res["ratios"]]
        out += [f"| peak RSS | {res['memory']['peak_rss_MiB']:.0f} MiB | | |", ""]
        if res["args"].get("quick"):
            out.append("**These numbers come from `--quick` (shrunken sizes) and mean nothing.**\n")
    out += ["### KV cache micro-benchmark", ""]
    if kv is None:
        out.append(_missing("kv_cache"))
    else:
        a = kv.get("args", {})
        out += [f"```\npython examples/kv_cache_benchmark.py --size {a.get('size')} --context-frames {a.get('context_frames')} "
                f"--repeats {a.get('repeats')} --threads {a.get('threads')}\n```", "",
                f"DiT {a.get('size')} ({kv.get('params_M', 0):.2f}M params), {kv['context_latent_frames']} latent frames "
                f"({kv['tokens_in_context']} tokens) of context, {kv['steps']} steps: KV cache {kv['cache_ms_per_chunk']:.1f} ms "
                f"per chunk, recompute {kv['recompute_ms_per_chunk']:.1f} ms -> **{kv['recompute_over_cache']:.1f}x**.", ""]
    return "\n".join(out)


def ablation_section(res: dict | None) -> str:
    out = ["## Ablation (the paper's Table 4)", ""]
    if res is None:
        return "\n".join(out + [_missing("ablation")])
    out += [_cmd(res, "ablation"), "", _probe_line(res.get("probe", {})), "", markdown_table(res["rows"], res["horizons_s"], "row"),
            "| row | sampling | generation time | ms per frame | paper VBench temporal / frame / text |", "|---|---|---|---|---|"]
    for name, t in res.get("timing", {}).items():
        out.append(f"| {name} | {t['sampling']} | {t['seconds']:.1f} s | {t['ms_per_frame']:.2f} | "
                   f"{res.get('paper_table4_vbench', {}).get(name, '-')} |")
    return "\n".join(out + [""])


def write_results(closed_loop=None, benchmark=None, kv_cache=None, ablation=None, out: str | Path = "docs/RESULTS.md") -> Path:
    """Render the results page from whichever JSON outputs exist; returns its path."""
    cl, bm, kv, ab = (_load(x) for x in (closed_loop, benchmark, kv_cache, ablation))
    text = "\n".join([
        "# Results", "",
        f"Generated by `python examples/write_results.py` on {time.strftime('%Y-%m-%d %H:%M')} from the JSON outputs of the commands "
        "shown in each section. All numbers are measured on this project's own CartPole world, CPU only.", "",
        closed_loop_section(cl), benchmark_section(bm, kv), ablation_section(ab)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--closed-loop", default=None, help="metrics.json of closed_loop_eval.py (or its --out directory)")
    p.add_argument("--benchmark", default=None, help="--json of benchmark.py")
    p.add_argument("--kv-cache", default=None, help="--json of kv_cache_benchmark.py")
    p.add_argument("--ablation", default=None, help="ablation.json of ablation.py (or its --out directory)")
    p.add_argument("--out", default="docs/RESULTS.md")
    a = p.parse_args(argv)
    path = write_results(a.closed_loop, a.benchmark, a.kv_cache, a.ablation, a.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
