"""Streaming video-to-video benchmark: speed, motion kept and prompt followed, at several strengths.

    python examples/v2v_benchmark.py                    # shipped checkpoint -> docs/results/v2v.json + docs/V2V.md
    python examples/v2v_benchmark.py --checkpoint runs/cartpole/checkpoint
    python examples/v2v_benchmark.py --quick            # smoke run (1 short episode, 2 variants, no JSON/doc)

Real episodes of the twin (default variant: brown pole, black cart) are restyled chunk by chunk
(`causvid_env.v2v.StreamingRestyler`, real actions) into every variant's prompt at each strength:

- speed: ms per 4-frame chunk (encode + denoise + decode) and frames/s, one thread, with the
  window full: wall time and CPU time (robust to a busy machine), every setting streaming the same
  long episode in lock-step;
- motion kept: the state probe (pole angle, cart position) on the restyled frames against the true
  states, and against the probe on the input frames. Baselines: the input itself (the probe's
  floor), the ideal restyle (the target variant drawn at the true states), a still first frame;
- prompt followed, from pixels (`causvid_env.appearance`): the angle between the colour of each
  part the variant recolours and its target colour, how often the nearest world colour is the
  target, the pole length, and PSNR on non-white pixels against the ideal restyle. Baselines: the
  input (nothing restyled) and the ideal restyle.

The figures are printed, saved as JSON and written between the markers of docs/V2V.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from causvid_env import appearance as ap
from causvid_env.checkpoint import default_checkpoint_dir, load_world_model
from causvid_env.v2v import StreamingRestyler
from causvid_env.worlds import get_world
from evaluation.probe import resolve_probe
from models.io import json_safe, write_json
from evaluation.rollouts import rollout_twin
from models.config_utils import add_dataclass_args
from models.metrics import nonwhite_mask, psnr

DOC_BEGIN, DOC_END = "<!-- v2v-benchmark:begin -->", "<!-- v2v-benchmark:end -->"


@dataclass
class Args:
    checkpoint: str | None = None
    """world-model checkpoint directory (default: the shipped one)"""
    probe: str | None = None
    """state probe directory (default: CHECKPOINT/probe, else the shipped probe; trained if missing)"""
    strengths: str = "0.5,0.75,0.9"
    """comma-separated noise strengths"""
    window: float = 1.0
    """seconds of restyled video in the KV cache (the restyler's default)"""
    episodes: int = 3
    """real episodes restyled into every variant (seeds seed, seed+1, ...)"""
    seconds: float = 3.0
    """length of each episode (it stops earlier if the pole falls past 45 deg)"""
    policies: str = "noisy_balance,noisy_balance,held_random"
    """twin policies, cycled over the episodes"""
    ablation_window: float = 10.0
    """the same restyle with this window (the env's) at ablation_strength, and its speed (0: skip)"""
    ablation_strength: float = 0.5
    seed: int = 0
    threads: int = 1
    out: str = "docs/results/v2v.json"
    doc: str = "docs/V2V.md"
    """markdown file whose block between the v2v-benchmark markers is rewritten ('' : none)"""
    quick: bool = False
    """smoke run: one 0.5 s episode, two variants, no ablation, nothing written"""


def _rel(path: Path) -> str:
    """A path relative to the working directory when it lies below it (portable in docs)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def timing(restylers: dict[str, StreamingRestyler], frames: np.ndarray, actions: np.ndarray, F: int) -> dict:
    """Per setting: wall and CPU time per chunk once its window is full. The settings stream the same
    long episode in lock-step, one chunk each in turn, so a busy machine slows them all alike; the
    process's CPU time (one thread) leaves out the time spent waiting for a core."""
    wall = {k: [] for k in restylers}
    cpu = {k: [] for k in restylers}
    for r in restylers.values():
        r.reset()
    for k in range(len(frames) // F):
        sl = slice(k * F, (k + 1) * F)
        for name, r in restylers.items():
            w0, c0 = time.perf_counter(), time.process_time()
            r.feed(frames[sl], actions=None if k == 0 else actions[sl])
            w1, c1 = time.perf_counter(), time.process_time()
            if int(r.cache.context_frames()[0]) >= r.window_frames:  # the window is full
                wall[name].append(w1 - w0)
                cpu[name].append(c1 - c0)
    out = {}
    for name, r in restylers.items():
        assert wall[name], f"the timing stream is shorter than the {r.window_seconds} s window of {name!r}"
        w, c = 1000 * np.asarray(wall[name]), 1000 * np.asarray(cpu[name])
        out[name] = {"timestep": round(r.timestep, 4), "denoising_steps": r.steps, "window_seconds": r.window_seconds,
                     "chunks_timed": len(w), "wall_ms_per_chunk_median": float(np.median(w)),
                     "wall_ms_per_chunk_p90": float(np.percentile(w, 90)), "cpu_ms_per_chunk_median": float(np.median(c)),
                     "frames_per_s_wall": float(F / np.median(w) * 1000), "frames_per_s_cpu": float(F / np.median(c) * 1000),
                     "stream_memory_bytes": r.memory_bytes()}
    return out


def probe_errors(probe, predicted: np.ndarray, reference: np.ndarray) -> dict:
    """Mean |predicted - reference| per probe target (`predicted`: `probe.predict` of some frames)."""
    err = np.abs(predicted - reference)
    return {n: float(err[:, j].mean()) for j, n in enumerate(probe.config.target_names)}


def appearance_scores(frames: np.ndarray, ideal: np.ndarray, layout: ap.Layout, target: dict, candidates: dict) -> dict:
    """Colour error (deg) and nearest-colour hits of each part, pole length, foreground PSNR vs the ideal restyle."""
    out = {}
    for part in ("pole", "cart"):
        err = ap.colour_error_deg(frames, layout, part, target[part])
        near = ap.nearest_colour(frames, layout, part, {str(c): c for c in candidates[part]})
        out[f"{part}_colour_error_deg"] = float(np.nanmean(err)) if np.isfinite(err).any() else float("nan")
        out[f"{part}_nearest_colour_hit"] = float((near == str(tuple(target[part]))).mean())
    length = ap.pole_length_px(frames, layout)
    out["pole_length_px"] = float(np.nanmean(length)) if np.isfinite(length).any() else float("nan")
    mask = nonwhite_mask(frames) | nonwhite_mask(ideal)
    out["psnr_fg_vs_ideal_db"] = psnr(frames, ideal, mask=mask)
    return out


def mean_dicts(ds: list[dict]) -> dict:
    return {k: float(np.nanmean([d[k] for d in ds])) for k in ds[0]}


def run(a: Args) -> dict:
    torch.set_num_threads(a.threads)
    t_start = time.time()
    world = get_world("cartpole")
    ckpt = Path(a.checkpoint) if a.checkpoint else default_checkpoint_dir(world.name)
    model = load_world_model(ckpt, world=world.name)
    probe_dir = a.probe or (ckpt / "probe" if (ckpt / "probe" / "config.json").is_file() else default_checkpoint_dir(world.name) / "probe")
    probe, probe_eval = resolve_probe(probe_dir, world.name, Path(a.out).parent)
    strengths = [float(s) for s in a.strengths.split(",")]
    variants = list(world.variants)
    episodes_n, seconds, ablation_window = a.episodes, a.seconds, a.ablation_window
    if a.quick:
        episodes_n, seconds, ablation_window, variants = 1, 0.5, 0.0, variants[:2]
    policies = a.policies.split(",")
    eps = [rollout_twin(world, a.seed + i, policies[i % len(policies)], seconds) for i in range(episodes_n)]
    F = eps[0].F
    layout = ap.find_layout(eps[0].frames[0])
    candidates = {p: sorted({ap.part_colours(world, v.name)[p] for v in world.variants}) for p in ("pole", "cart")}
    truth = [probe.targets(ep.states) for ep in eps]
    probe_in = [probe.predict(ep.frames) for ep in eps]
    r = StreamingRestyler(model, strength=strengths[0], seed=a.seed, window_seconds=a.window)
    r.set_prompt(variants[0].prompt)
    r.feed(eps[0].frames[:F])  # warm-up (MiniLM load, first allocations); not timed

    res = {"kind": "v2v_benchmark", "command": "python examples/v2v_benchmark.py" + ("" if a.checkpoint is None else f" --checkpoint {a.checkpoint}"),
           "args": asdict(a), "checkpoint": _rel(ckpt), "checkpoint_info": {k: model.info.get(k) for k in ("preset", "command", "dmd_rollout", "shipped_from")},
           "probe": _rel(probe_dir), "probe_heldout": {k: v for k, v in probe_eval.items() if k.endswith("_mae")},
           "device": f"cpu, {torch.get_num_threads()} thread(s)", "cpu_count": os.cpu_count(),
           "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "window_seconds": r.window_seconds,
           "episodes": [{"seed": ep.seed, "policy": ep.policy, "frames": len(ep.frames)} for ep in eps],
           "student_timesteps": [round(float(t), 4) for t in r.timesteps]}

    # -- baselines that do not depend on the strength --------------------------------------------
    def motion_of(frame_lists: list[list[np.ndarray]]) -> dict:  # per variant, per episode
        read = [(probe.predict(f), i) for fs in frame_lists for i, f in enumerate(fs)]  # the probe runs once per video
        return {"vs_truth": mean_dicts([probe_errors(probe, p, truth[i]) for p, i in read]),
                "vs_input": mean_dicts([probe_errors(probe, p, probe_in[i]) for p, i in read])}

    ideal = {v.name: [ap.render_at_states(world, v.name, ep.states) for ep in eps] for v in variants}
    motion = {"input (probe floor)": motion_of([[ep.frames for ep in eps]]),
              "ideal restyle": motion_of(list(ideal.values())),
              "still first frame": motion_of([[np.repeat(ep.frames[:1], len(ep.frames), 0) for ep in eps]])}

    def appearance_of(v, frames: list[np.ndarray]) -> dict:
        return mean_dicts([appearance_scores(f, i, layout, ap.part_colours(world, v.name), candidates) for f, i in zip(frames, ideal[v.name])])

    prompt = {v.name: {"prompt": v.prompt, "recoloured_parts": sorted(v.colors) or ["(none: the input's own look)"],
                       "target_colours": ap.part_colours(world, v.name), "input": appearance_of(v, [ep.frames for ep in eps]),
                       "ideal restyle": appearance_of(v, ideal[v.name])} for v in variants}

    # -- restyle every episode into every variant ------------------------------------------------
    def grid(rs: StreamingRestyler, label: str) -> None:
        outs = {}
        for v in variants:
            outs[v.name] = []
            for i, ep in enumerate(eps):
                rs.reset(seed=a.seed + i)
                rs.set_prompt(v.prompt)
                outs[v.name].append(rs.feed_episode(ep.frames, ep.actions))
            prompt[v.name][label] = appearance_of(v, outs[v.name])
        motion[label] = motion_of(list(outs.values()))
        print(f"{label}: restyled", flush=True)

    settings = {}
    for s in strengths:
        settings[f"strength {s:g}"] = rs = StreamingRestyler(model, strength=s, seed=a.seed, window_seconds=a.window,
                                                             text_encoder=r.text_encoder)
        grid(rs, f"strength {s:g}")
    if ablation_window > 0:  # the env's long window
        label = f"strength {a.ablation_strength:g}, window {ablation_window:g} s"
        settings[label] = rs = StreamingRestyler(model, strength=a.ablation_strength, seed=a.seed,
                                                 window_seconds=ablation_window, text_encoder=r.text_encoder)
        grid(rs, label)

    # -- speed: every setting with its window full, in lock-step -----------------------------------
    longest = max(x.window_seconds for x in settings.values())
    long_ep = rollout_twin(world, a.seed + 100, "balance", longest + (0.5 if a.quick else 2.0))
    for x in settings.values():
        x.set_prompt(variants[-1].prompt)
    speed = timing(settings, long_ep.frames, long_ep.actions, F)
    for k, v in speed.items():
        print(f"{k}: {v['wall_ms_per_chunk_median']:.1f} ms/chunk wall, {v['cpu_ms_per_chunk_median']:.1f} ms CPU", flush=True)
    res.update(speed=speed, motion=motion, prompt=prompt, wall_seconds=round(time.time() - t_start, 1))
    return res


# -- report ------------------------------------------------------------------------------------------
def _f(v, fmt=".1f"):
    if isinstance(v, float) and v == float("inf"):
        return "inf"  # identical frames (PSNR of the ideal restyle against itself)
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def markdown(res: dict) -> str:
    settings = list(res["speed"])  # the strengths, then the ablation
    episodes = ", ".join(f"{e['policy']} {e['frames']} frames" for e in res["episodes"])
    load = ", ".join(f"{x:g}" for x in res["load_average_at_start"])
    L = [f"Measured by `{res['command']}` ({res['device']} of {res['cpu_count']} cores, load average {load} at the start: "
         f"the cores were shared with training jobs, so wall times are upper bounds; {res['wall_seconds']:.0f} s in all; "
         f"checkpoint `{res['checkpoint']}`). Input: {len(res['episodes'])} real episode(s) of the twin in the default look "
         f"({episodes}), each restyled into each of the {len(res['prompt'])} variant prompts with its real actions, "
         f"KV cache window {res['window_seconds']:g} s unless said. JSON: `{res['args']['out']}`.", "",
         "**Speed** with the window full (one 4-frame chunk = VAE encode + denoise + clean cache pass + VAE decode; "
         "medians over the chunks after the window filled; the process's CPU time and the wall time; real time is 80 ms per "
         "chunk, 50 frames/s):", "",
         "| setting | student level t | denoising steps | ms/chunk, CPU | frames/s, CPU | ms/chunk, wall (p90) | frames/s, wall |",
         "|---|---|---|---|---|---|---|"]
    for k in settings:
        sp = res["speed"][k]
        label = k if "window" in k else f"{k}, window {sp['window_seconds']:g} s"
        L.append(f"| {label} | {sp['timestep']:.2f} | {sp['denoising_steps']} | {sp['cpu_ms_per_chunk_median']:.1f} | "
                 f"{sp['frames_per_s_cpu']:.0f} | {sp['wall_ms_per_chunk_median']:.1f} ({sp['wall_ms_per_chunk_p90']:.0f}) | "
                 f"{sp['frames_per_s_wall']:.0f} |")
    names = list(res["motion"]["input (probe floor)"]["vs_truth"])
    unit = {n: ("deg" if "deg" in n else "m") for n in names}
    L += ["", "**Motion kept** (state probe; mean absolute error over all frames, episodes and variants):", "",
          "| frames | " + " | ".join(f"{n} vs truth ({unit[n]})" for n in names) + " | "
          + " | ".join(f"{n} vs probe on the input ({unit[n]})" for n in names) + " |",
          "|---" * (1 + 2 * len(names)) + "|"]
    for k in ["input (probe floor)", "ideal restyle"] + settings + ["still first frame"]:
        m = res["motion"][k]
        label = f"restyled, {k}" if k.startswith("strength") else k
        L.append(f"| {label} | " + " | ".join(_f(m["vs_truth"][n], ".2f") for n in names) + " | "
                 + " | ".join(_f(m["vs_input"][n], ".2f") for n in names) + " |")
    cols = ["input"] + settings + ["ideal restyle"]
    head = " | ".join(c if c in ("input", "ideal restyle") else f"restyled, {c}" for c in cols)
    L += ["", "**Prompt followed**: colour error, the angle in degrees between a part's colour read from the pixels and "
          "the variant's colour (0 = same hue and saturation; lower is better), and in brackets the share of frames whose "
          "nearest world colour is the target. For each variant, the parts it recolours (default: both, as a control):", "",
          f"| variant: part | {head} |", "|---" * (1 + len(cols)) + "|"]
    restyled_rows = []
    for name, p in res["prompt"].items():
        parts = [x for x in p["recoloured_parts"] if x in ("pole", "cart")] or ["pole", "cart"]
        for part in parts:
            cells = [(p[c][f"{part}_colour_error_deg"], p[c][f"{part}_nearest_colour_hit"]) for c in cols]
            if part in p["recoloured_parts"]:  # the default variant is a control, not a restyle
                restyled_rows.append(cells)
            L.append(f"| {name}: {part} | " + " | ".join(f"{_f(e)} ({100 * h:.0f}%)" for e, h in cells) + " |")
    if restyled_rows:
        mean = [(float(np.nanmean([r[j][0] for r in restyled_rows])), float(np.mean([r[j][1] for r in restyled_rows])))
                for j in range(len(cols))]
        L.append("| **mean over the recoloured parts** | " + " | ".join(f"**{_f(e)} ({100 * h:.0f}%)**" for e, h in mean) + " |")
    L += ["", "Pole length (pixels from the axle to the farthest pole pixel; the long and short variants change it) and "
          "PSNR on non-white pixels against the ideal restyle (dB):", "",
          f"| variant | {head} |", "|---" * (1 + len(cols)) + "|"]
    for name, p in res["prompt"].items():
        L.append(f"| {name} | " + " | ".join(f"{_f(p[c]['pole_length_px'])} px / {_f(p[c]['psnr_fg_vs_ideal_db'])}" for c in cols) + " |")
    return "\n".join(L)


def write_doc(path: Path, block: str) -> bool:
    if not path.is_file():
        return False
    text = path.read_text()
    pat = re.compile(re.escape(DOC_BEGIN) + ".*?" + re.escape(DOC_END), re.S)
    if not pat.search(text):
        return False
    path.write_text(pat.sub(lambda _: f"{DOC_BEGIN}\n{block}\n{DOC_END}", text))
    return True


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(p, Args)
    a = Args(**vars(p.parse_args(argv)))
    res = run(a)
    block = markdown(res)
    print(block)
    if not a.quick:
        write_json(a.out, res)
        print(f"saved {a.out}")
        if a.doc and write_doc(Path(a.doc), block):
            print(f"updated the measured figures in {a.doc}")
    else:
        print(json.dumps(json_safe(res["speed"]), indent=1))
    return res


if __name__ == "__main__":
    main()
