"""The one composer of `docs/RESULTS.md`: reads every results JSON under docs/results/ and writes
the page. Nothing is measured here; every number comes from a JSON that holds its own command.

    python examples/compose_results.py [--results docs/results] [--out docs/RESULTS.md]

Layout it reads (each optional; a missing one becomes a line naming the command that makes it):
    closed_loop/metrics.json            the shipped checkpoint at its default window (the 1.28 s it was trained with)
    closed_loop_window10s/metrics.json  the v2 checkpoint with a 10 s window
    closed_loop_context_noise*/metrics.json  the v2 checkpoint with the cache written at another noise level
    closed_loop_v*/metrics.json         earlier checkpoints under the same protocol
    closed_loop_clip*/metrics.json      closed loop from 16-frame real clips (the main protocol of issue 23)
    push_response/*.json                the push-response gate (teachers and students) and the teacher's learning curve
    chunk_dynamics/*.json               the chunk-dynamics gate (random push scripts, a linear fit per chunk)
    script_survival/*.json              blind action scripts and the shipped policy, dream vs real (the dream's free reward)
    closed_loop_physics_bound.json      perfect physics from a slightly wrong start under the replayed actions
    training_record.json                cumulative steps, samples and CPU-hours across warm-started sessions
    action_following.json, action_following_v1.json   12-frame held pushes vs the real twin
    ablation/ablation.json              the paper's Table 4 rows plus teacher- vs self-forcing
    training.json                       stage steps and wall times of the shipped run
    benchmark.json, kv_cache.json       speed
    ppo_*_in_real.json, random_in_real.json  agents scored in the real CartPole-v1
    v2v.json                            streaming video-to-video
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evaluation.report import markdown_table

# issue 13's targets, checked against the closed-loop table (dream vs repeat-last-frame)
ANGLE_TARGETS = {"1s": 3.0, "2s": 6.0}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _cmd(res: dict) -> str:
    return f"```\n{res.get('command', '(command not recorded)')}\n```"


def _probe_line(p: dict | None) -> str:
    if not p or "skipped" in p:
        return "State probe: none."
    parts = [f"{k[:-4].replace('_', ' ')} {v:.3f}" for k, v in p.items() if k.endswith("_mae")]
    return "State probe held-out error on real frames (mean abs): " + ", ".join(parts) + "."


def _fmt(v, f="{:.2f}") -> str:
    return "-" if v is None else (v if isinstance(v, str) else f.format(v))


def targets_section(cl: dict | None, af: dict | None) -> list[str]:
    out = ["## Issue 13 targets (closed loop, held-out real starts)", ""]
    if cl is None:
        return out + ["_closed_loop/metrics.json missing: run examples/reproduce_results.sh_", ""]
    m = cl["methods"]
    dream, rep = m.get("dream (student)", {}), m.get("repeat_last_frame", {})
    sim = m.get("simulator_from_still_frame", {})
    out += ["| horizon | metric | dream | repeat-last-frame | real simulator from the still frame | target | met |", "|---|---|---|---|---|---|---|"]
    for h in [f"{x:g}s" for x in cl["horizons_s"]]:
        d, r, s = dream.get(h, {}), rep.get(h, {}), sim.get(h, {})
        for key, name, fmt in (("pole_angle_deg_err", "probe angle err (deg)", "{:.2f}"), ("cart_x_m_err", "probe cart err (m)", "{:.3f}"),
                               ("psnr", "PSNR (dB)", "{:.2f}")):
            if key not in d:
                continue
            higher_better = key == "psnr"
            beat = (d[key] > r[key]) if higher_better else (d[key] < r[key])
            target = "> repeat-last" if higher_better else "< repeat-last"
            met = beat
            if key == "pole_angle_deg_err" and h in ANGLE_TARGETS:
                target += f" and < {ANGLE_TARGETS[h]:g}"
                met = beat and d[key] < ANGLE_TARGETS[h]
            out.append(f"| {h} | {name} | {fmt.format(d[key])} | {fmt.format(r[key])} | {_fmt(s.get(key), fmt)} | {target} | "
                       f"{'yes' if met else '**no**'} |")
    last = f"{cl['horizons_s'][-1]:g}s"
    tw = dream.get(last, {}).get("term_within_4_frames")
    out.append(f"| first {last} | termination within 4 frames of the real one (episodes that terminate) | {_fmt(tw)} | - | - | >= 0.80 | "
               f"{'yes' if tw is not None and tw >= 0.8 else '**no**'} |")
    if af is not None and af.get("response_ratio"):
        rr = af["response_ratio"]
        ok = rr.get("gap_pole_angle_deg") is not None and abs(rr["gap_pole_angle_deg"] - 1) <= 0.3
        out.append(f"| {af['seconds']} s held push | pole-angle response right - left, dream / real ({len(af['seeds'])} starts) | "
                   f"{_fmt(rr.get('gap_pole_angle_deg'))} | - | - | 0.70-1.30 | {'yes' if ok else '**no**'} |")
        okx = rr.get("gap_cart_x_m") is not None and abs(rr["gap_cart_x_m"] - 1) <= 0.3
        out.append(f"| {af['seconds']} s held push | cart response right - left, dream / real | {_fmt(rr.get('gap_cart_x_m'))} | - | - | "
                   f"0.70-1.30 | {'yes' if okx else '**no**'} |")
    out += ["", "The *real simulator from the still frame* is the true physics started from the start frame's pose with "
            "velocities re-drawn from the reset distribution (a still frame cannot show them), replaying the same actions: "
            "the error any image-started world model must expect from not knowing the initial velocities.", ""]
    return out


def closed_loop_section(title: str, res: dict | None, missing: str) -> list[str]:
    out = [f"## {title}", ""]
    if res is None:
        return out + [f"_Not run: {missing}_", ""]
    ci = res.get("checkpoint_info", {})
    out += [_cmd(res), "", f"Checkpoint: `{ci.get('command')}` (DMD rollout `{ci.get('dmd_rollout')}`, window "
            f"{ci.get('window_frames') or 'default'} latent frames, context noise {ci.get('context_noise')}); run with window "
            f"{res['args'].get('window_seconds') or 'trained'} s, context noise {res['args'].get('context_noise')} "
            "(None = the checkpoint's).",
            f"{len(res['episodes'])} real episodes (policies {sorted({e['policy'] for e in res['episodes']})}). "
            + res.get("horizon_semantics", ""), "", _probe_line(res.get("probe")), "", markdown_table(res["methods"], res["horizons_s"]), ""]
    return out


def action_section(af: dict | None, label: str) -> list[str]:
    if af is None:
        return []
    out = [f"## Action following: {label}", "", _cmd(af), "",
           f"Held push for {af['seconds']} s from the same real start (seeds {af['seeds']}), last frame read by the state probe.", "",
           "| world | push | pole angle deg | cart x m | terminated within (of %d) |" % len(af["seeds"]), "|---|---|---|---|---|"]
    for w in ("dream", "real"):
        for side in ("right", "left"):
            r = af[w][side]
            out.append(f"| {w} | {side} | {r['pole_angle_deg']:.2f} | {r['cart_x_m']:.3f} | {r['terminated_within']} |")
    rr = af.get("response_ratio", {})
    out += ["", f"Gap right - left: dream {af['dream']['gap_pole_angle_deg']:.2f} deg / {af['dream']['gap_cart_x_m']:.3f} m; real "
            f"{af['real']['gap_pole_angle_deg']:.2f} deg / {af['real']['gap_cart_x_m']:.3f} m; ratio dream / real: angle "
            f"{_fmt(rr.get('gap_pole_angle_deg'))}, cart {_fmt(rr.get('gap_cart_x_m'))}.", ""]
    return out


def push_response_section(r: Path) -> list[str]:
    """The gate of every model in push_response/*.json: 12-frame held-push gap (right - left) against the real one."""
    files = sorted((r / "push_response").glob("*.json"))
    if not files:
        return []
    out = ["## Push-response gate (12-frame held push, right minus left)", "",
           "From N real starts, the push right and the push left are held for 12 frames; the state probe reads the last frame. "
           "Ratio = model gap / real gap (target 0.7-1.3, right sign). `image`: one still real frame; `clip`: a 16-frame real "
           "clip (the still chunk and 3 chunks of a noisy balancing controller). Error after push: probe reading against the "
           "real frame, next to repeat-last-frame (the last context frame). VAE bound: the real frames encoded and decoded "
           "by the VAE the model was decoded with (no model shows more of the push than its decoder). "
           "`python -m evaluation.push_response --help`.", "",
           "| model | starts | sampling | image pole / cart | clip pole / cart | VAE bound pole, image / clip | "
           "error after push deg / m (repeat-last) | gate |",
           "|---|---|---|---|---|---|---|---|"]
    curve = None
    for f in files:
        res = _load(f)
        if "curve" in res and res["curve"]:
            curve = (f, res)
        for name, m in res.get("models", {}).items():
            if name.startswith("teacher step"):
                continue  # the curve below
            pr = m["protocols"]
            samp = m.get("sampling", {})
            how = (f"ODE {samp.get('num_steps')} steps, CFG text {samp.get('guidance_text')} / action {samp.get('guidance_action')}"
                   if samp else "4-step student, env")
            cells = [f"{pr[p]['ratio']['pole_angle_deg']:+.2f}x / {pr[p]['ratio']['cart_x_m']:+.2f}x" for p in ("image", "clip")]
            err = pr["clip"].get("error_after_push", {})
            rep = pr["clip"].get("repeat_last_frame_error", {})
            e = (f"{err['pole_angle_deg']:.1f} / {err['cart_x_m']:.3f} ({rep['pole_angle_deg']:.1f} / {rep['cart_x_m']:.3f})"
                 if err and rep else "-")
            bound = (" / ".join(f"{pr[p]['vae_bound']['ratio']['pole_angle_deg']:.2f}x" for p in ("image", "clip"))
                     if all("vae_bound" in pr[p] for p in ("image", "clip")) else "not measured")
            out.append(f"| {name} (`{f.name}`) | {m['starts']} | {how} | {cells[0]} | {cells[1]} | {bound} | {e} | "
                       f"{'pass' if m['passes'] else 'fail'} |")
    if curve is not None:
        f, res = curve
        out += ["", f"Teacher learning curve (`{f.name}`, cumulative steps including the warm start; "
                "[plot](results/push_response/teacher_curve.png)):", "", "| steps | image pole | image cart | clip pole | clip cart |",
                "|---|---|---|---|---|"]
        for c in res["curve"]:
            out.append(f"| {c['step']} | {c['image_pole_angle_deg']:+.2f}x | {c['image_cart_x_m']:+.2f}x | "
                       f"{c['clip_pole_angle_deg']:+.2f}x | {c['clip_cart_x_m']:+.2f}x |")
    return out + [""]


def chunk_dynamics_section(r: Path) -> list[str]:
    """Every model in chunk_dynamics/*.json: its per-chunk response to random push scripts against the real simulator's."""
    files = sorted((r / "chunk_dynamics").glob("*.json"))
    if not files:
        return []
    out = ["## Chunk-dynamics gate (random push scripts, a linear fit per chunk)", "",
           "From N real starts, every model and the real simulator play the same random scripts (each chunk keeps the last push "
           "with probability 1/2); the probe reads the pole angle at the end of every chunk and "
           "d_t = a u_t + b u_(t-1) + c d_(t-1) + e theta_(t-1) + bias is fitted (d: one chunk's change of angle, u = +-1). "
           "Ratios to the real fit: push (a), carry-over into the next chunk (b), momentum (c); target 0.7-1.3 each. "
           "Residual: the spread no action explains (degrees per chunk). In brackets where the JSON has it: the 90% bootstrap "
           "interval over starts (`python -m evaluation.gate_intervals FILE ...` gives it for any saved gate, with paired "
           "differences between models). `python -m evaluation.chunk_dynamics --help`.", ""]
    for f in files:
        res = _load(f)
        out += [f"`{f.name}`: {res['starts']} starts, {res['chunks']} chunks; command:", _cmd(res), "",
                "| model | start | push | carry-over | momentum | residual deg (real) | angle err deg, chunk 1 / 3 / 6 (repeat-last) | gate |",
                "|---|---|---|---|---|---|---|---|"]
        for proto, rep in res["protocols"].items():
            real, rep_err = rep["real"], rep["repeat_last_frame_angle_error_deg"]
            for name, m in rep["models"].items():
                if not m.get("ratio"):
                    out.append(f"| {name} | {proto} | - | - | - | - | - | too few chunks inside 12 deg to fit |")
                    continue
                r_ = m["ratio"]
                e = m["angle_error_deg"]
                idx = (0, 2, min(5, len(e) - 1))
                ci = m.get("ratio_ci90") or {}
                x = lambda k: f"{r_[k]:.2f}x" + (f" ({ci[k][0]:.2f}-{ci[k][1]:.2f})" if ci.get(k) else "")
                out.append(f"| {name} | {proto} | {x('push')} | {x('push_carry_over')} | {x('momentum')} | "
                           f"{m['residual_sd_deg']:.2f} ({real['residual_sd_deg']:.2f}) | "
                           + " / ".join(f"{e[i]:.1f}" for i in idx) + " (" + " / ".join(f"{rep_err[i]:.1f}" for i in idx) + ") | "
                           + ("pass" if m["passes"] else "fail") + " |")
        out.append("")
    return out


def script_survival_section(r: Path) -> list[str]:
    """Every model in script_survival/*.json: frames blind scripts and a policy survive in its dream against the real twin."""
    files = sorted((r / "script_survival").glob("*.json"))
    if not files:
        return []
    out = ["## Script survival (does the dream reward a policy that looks?)", "",
           "From N real starts (image resets), blind action scripts and the shipped policy play in the real twin and in the "
           "dream; the figures are the mean frames up to the first terminating one. Free reward: the dream's best script over "
           "the real best. The gate passes when the free reward is at most the limit and the dream keeps the policy up longer "
           "than every script, as the real twin does. `python -m evaluation.script_survival --help`.", ""]
    for f in files:
        res = _load(f)
        if not res or res.get("kind") != "script_survival":
            continue
        out += ([f"`{f.name}`: {res['starts']} starts; command:", _cmd(res)] if res.get("command") else
                [f"`{f.name}`: {res['starts']} starts; {res.get('note', '')}"])
        out += ["", "| model | best script: dream (real best) | free reward | policy: dream (real) | gate |", "|---|---|---|---|---|"]
        for name, m in res["models"].items():
            pol = m.get("policy")
            out.append(f"| {name} | {m['best_dream_script']} {m['best_dream_frames']:.1f} ({m['best_real_script']} "
                       f"{m['best_real_frames']:.1f}) | {m['free_reward_ratio']:.2f}x | "
                       + (f"{pol['dream_mean']:.1f} ({pol['real_mean']:.0f})" if pol else "-") + " | "
                       + ("pass" if m["passes"] else "fail") + " |")
        out.append("")
    return out


def physics_bound_section(res: dict | None) -> list[str]:
    if res is None:
        return []
    out = ["## What perfect physics reaches under replayed actions (clip starts)", "",
           "The real simulator from a slightly wrong start state replaying the closed-loop protocol's actions, probe angle "
           "error in degrees per horizon bin (the same 16 episodes as `closed_loop_clip*`):", _cmd(res), "",
           "| start | " + " | ".join(res["pole_angle_error_deg"]["repeat_last_frame"]) + " |",
           "|---|" + "---|" * len(res["pole_angle_error_deg"]["repeat_last_frame"])]
    for m, row in res["pole_angle_error_deg"].items():
        out.append(f"| {m} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
    return out + [""]


def record_section(rec: dict | None) -> list[str]:
    if rec is None:
        return []
    out = ["## Training across sessions (cumulative)", "", "| stage | steps | samples | CPU-hours | sessions |", "|---|---|---|---|---|"]
    for stage, t in rec["cumulative"].items():
        out.append(f"| {stage} | {t['steps']} | {t['samples']} | {t['cpu_hours']:.2f} | {t['sessions']} |")
    out += ["", "| session | run | warm start | stages (steps) |", "|---|---|---|---|"]
    for e in rec["sessions"]:
        out.append(f"| {e['session']} | `{e['run']}` | {e.get('init_from') or '-'} | "
                   + ", ".join(f"{s['stage']} {s['steps']}" for s in e["stages"]) + " |")
    return out + [""]


def ablation_section(res: dict | None) -> list[str]:
    out = ["## Ablation (the paper's Table 4, plus teacher- vs self-forcing)", ""]
    if res is None:
        return out + ["_Not run: python examples/ablation.py --run runs/cartpole --out docs/results/ablation_", ""]
    out += [_cmd(res), "", _probe_line(res.get("probe")), "", markdown_table(res["rows"], res["horizons_s"], "row"), "",
            "| row | sampling | generation time | ms per frame | paper VBench temporal / frame / text |", "|---|---|---|---|---|"]
    for name, t in res.get("timing", {}).items():
        out.append(f"| {name} | {t['sampling']} | {t['seconds']:.1f} s | {t['ms_per_frame']:.2f} | {res.get('paper_table4_vbench', {}).get(name, '-')} |")
    return out + [""]


def training_section(tr: dict | None) -> list[str]:
    out = ["## Training run", ""]
    if tr is None:
        return out + ["_training.json missing_", ""]
    out += [_cmd(tr), "", f"Hardware: {tr.get('hardware')}.", "", "| stage | steps / size | wall time | note |", "|---|---|---|---|"]
    for s in tr["stages"]:
        out.append(f"| {s['stage']} | {s.get('steps', '-')} | {s.get('wall', '-')} | {s.get('note', '')} |")
    return out + [""]


def speed_section(bm: dict | None, kv: dict | None) -> list[str]:
    out = ["## Speed", ""]
    if bm is None:
        out.append("_benchmark.json missing: python examples/benchmark.py --json docs/results/benchmark.json --threads 1_")
    else:
        out += [_cmd(bm), "", f"Device: {bm.get('device')} ({bm.get('device_name', 'unrecorded')}), {bm.get('torch_threads')} torch thread(s).", "", "| measurement | a | b | a / b |", "|---|---|---|---|"]
        out += [f"| {r['what']} | {r['a']} | {r['b']} | {r['ratio']:.2f}x |" for r in bm.get("ratios", [])]
        full = bm.get("student_full_context", {})
        if "ms_per_chunk_min_max" in full:
            lo, hi = full["ms_per_chunk_min_max"]
            out += ["", f"Timings on this machine vary from run to run: the {full['repeats']} chunks timed at the "
                    f"{full['context_seconds']:.1f} s context took {lo:.1f} to {hi:.1f} ms (median {full['ms_per_chunk']:.1f} ms, "
                    "the figure above)."]
        parts = full.get("breakdown_ms")
        if parts:
            out += ["", f"Where one chunk's {full['ms_per_chunk']:.1f} ms go at a {full['context_seconds']:.1f} s context (timed apart, "
                    f"same run): the student's 4 passes (the first also writes the previous chunk's keys/values) {parts['student_passes']:.1f} ms, the VAE decode "
                    f"{parts['vae_decode_all_frames']:.1f} ms for 4 frames ({parts['vae_decode_last_frame']:.1f} ms for the last frame "
                    f"only), the reward/termination heads {parts['heads']:.1f} ms."]
    if kv is not None:
        a = kv.get("args", {})
        out += ["", f"KV cache micro-benchmark (DiT {a.get('size')}, {kv['context_latent_frames']} latent frames = {kv['tokens_in_context']} "
                f"tokens of context): cache {kv['cache_ms_per_chunk']:.1f} ms per chunk vs recompute {kv['recompute_ms_per_chunk']:.1f} ms "
                f"= **{kv['recompute_over_cache']:.1f}x** (`python examples/kv_cache_benchmark.py --json docs/results/kv_cache.json --threads 1`)."]
    return out + [""]


def agents_section(res: Path) -> list[str]:
    rows = []
    for name, label in (("ppo_dream_in_real", "PPO trained only in the dream"), ("ppo_real_in_real", "PPO trained on the real twin"),
                        ("random_in_real", "random")):
        d = _load(res / f"{name}.json")
        if d is not None:
            rows.append(f"| {label} | {d.get('mean', float('nan')):.1f} | {d.get('std', float('nan')):.1f} | {d.get('min')} | {d.get('max')} | "
                        f"{d.get('checkpoint_note', 'first (v1) checkpoint')} |")
    if not rows:
        return []
    return ["## Agents scored in the real CartPole-v1 (100 episodes, frames survived, cap 500)", "",
            "| agent | mean | std | min | max | world model |", "|---|---|---|---|---|---|", *rows, ""]


def v2v_section(v: dict | None) -> list[str]:
    if v is None:
        return []
    return ["## Streaming video-to-video", "", _cmd(v), "", "See [V2V.md](V2V.md) for the table; raw figures in `docs/results/v2v.json`.", ""]


def compose(results: str | Path = "docs/results", out: str | Path = "docs/RESULTS.md") -> Path:
    r = Path(results)
    cl = _load(r / "closed_loop" / "metrics.json")
    af = _load(r / "action_following.json")
    lines = ["# Results", "",
             f"Composed by `python examples/compose_results.py` on {time.strftime('%Y-%m-%d %H:%M')} from the JSON files under "
             "docs/results/ (each holds the command that made it; `examples/reproduce_results.sh` runs them all). Every figure is "
             "measured on this project's CartPole world; every metric is shown next to its baselines, including the ones the dream loses.", ""]
    notes = r / "NOTES.md"
    if notes.is_file():  # hand-written provenance notes (renamed directories, which model made a file)
        lines += [notes.read_text().strip(), ""]
    lines += targets_section(cl, af)
    lines += closed_loop_section("Closed loop: the shipped checkpoint (default window: the 1.28 s it was trained with)", cl,
                                 "examples/closed_loop_eval.py --out docs/results/closed_loop")
    lines += closed_loop_section("Closed loop: the v2 checkpoint with a 10 s window (compare with `closed_loop_v2`)",
                                 _load(r / "closed_loop_window10s" / "metrics.json"), "closed_loop_eval.py --window-seconds 10")
    for p in sorted(r.glob("closed_loop_context_noise*/metrics.json")):
        lines += closed_loop_section(f"Closed loop: the v2 checkpoint, cache written at context noise {p.parent.name.split('noise')[-1]} "
                                     "(compare with `closed_loop_v2`: same 1.28 s window, noise 0)", _load(p), "")
    for p in sorted(r.glob("closed_loop_v*/metrics.json")):
        lines += closed_loop_section(f"Closed loop: an earlier checkpoint (`{p.parent.name}`), same protocol", _load(p), "")
    for p in sorted(r.glob("closed_loop_clip*/metrics.json")):
        lines += closed_loop_section(f"Closed loop from 16-frame real clips (`{p.parent.name}`)", _load(p), "")
    lines += physics_bound_section(_load(r / "closed_loop_physics_bound.json"))
    lines += push_response_section(r)
    lines += chunk_dynamics_section(r)
    lines += script_survival_section(r)
    lines += record_section(_load(r / "training_record.json"))
    lines += action_section(af, "shipped checkpoint")
    lines += action_section(_load(r / "action_following_v1.json"), "previous (v1) checkpoint")
    lines += ablation_section(_load(r / "ablation" / "ablation.json"))
    lines += training_section(_load(r / "training.json"))
    lines += speed_section(_load(r / "benchmark.json"), _load(r / "kv_cache.json"))
    lines += agents_section(r)
    lines += v2v_section(_load(r / "v2v.json"))
    out = Path(out)
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default="docs/results")
    p.add_argument("--out", default="docs/RESULTS.md")
    a = p.parse_args(argv)
    path = compose(a.results, a.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
