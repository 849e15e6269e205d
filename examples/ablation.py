"""The paper's Table 4 on our world: which ingredients of CausVid matter, scored against reality.

    python examples/ablation.py --run runs/cartpole --out runs/ablation [--horizons 1,2] [--episodes 12]

Rows (each one skipped with a note when its model is not in the run directory):
- many-step bidirectional teacher   RUN/teacher/model (guided ODE, clip windows of its trained length)
- many-step causal teacher          RUN/causal_teacher/model (chunk by chunk, KV cache, many steps)
- ODE init + bidirectional DMD      RUN/checkpoint (self-forcing, the shipped recipe), and the same
                                    run's generator at the ablations' step budget (RUN/dmd_self_forcing/model_stepN)
- teacher-forcing DMD               RUN/checkpoint_teacher_forcing (CausVid's generator rollout)
- no ODE init                       RUN/ablations/no_ode_init/checkpoint
- causal-teacher DMD                RUN/ablations/causal_teacher/checkpoint
- ODE init only                     RUN/ablations/ode_init_only/checkpoint (else RUN/ode_init/model)
plus the repeat-last-frame and VAE-reconstruction baselines. Every row gets the same real starts
and the same action script (see evaluation.rollouts) and short horizons (1 s and 2 s by default,
the teachers being slow). The paper's VBench numbers are printed next to ours for orientation
only: different metrics, different world.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from causvid_env.checkpoint import WorldModel, load_world_model
from causvid_env.worlds import get_world
from evaluation.metrics import episode_summaries, evaluate_methods
from evaluation.probe import resolve_probe
from evaluation.report import markdown_table, timed
from models.io import write_json
from evaluation.rollouts import (PromptTexts, real_rollouts, repeat_last_frame, simulator_from_still_frame, student_generate,
                                 teacher_generate, vae_reconstruction)
from models.config_utils import add_dataclass_args
from models.dit import DiT

MAIN_ROW = "ODE init + bidirectional DMD, self-forcing (shipped recipe)"
PAPER_TABLE4 = {  # VBench temporal / frame / text quality (CausVid paper, Table 4)
    MAIN_ROW: "94.7 / 64.4 / 30.1 (CausVid)",
    "no ODE init": "92.9 / 48.1 / 25.3",
    "causal-teacher DMD": "91.9 / 61.7 / 28.2",
    "ODE init only": "93.4 / 60.6 / 29.4",
}


@dataclass
class Args:
    run: str
    """pipeline run directory (distill.pipeline --out)"""
    out: str
    """output directory (ablation.json, ablation.md)"""
    world: str = "cartpole"
    episodes: int = 12
    horizons: str = "1,2"
    seed: int = 20_000
    """seed of the first real episode"""
    teacher_steps: int = 50
    """Euler steps of the many-step teachers"""
    budget_steps: int = 100
    """DMD generator steps every ablation row was trained for (the main run's snapshot at this step is a row too)"""
    teacher_clip_frames: int = 0
    """bidirectional teacher window in latent frames (0: the length it was trained on)"""
    probe: str | None = None
    """state-probe directory (trained into it when empty; default OUT/probe)"""
    probe_steps: int = 1500
    probe_episodes: int = 32
    batch_size: int = 8
    window_seconds: float | None = None
    threads: int = 1


def _pipeline_cfg(run: Path) -> dict:
    p = run / "pipeline_config.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _dit_dir(p: Path) -> Path | None:
    return p if (p / "config.json").is_file() else None


def run(a: Args, command: str = "") -> dict:
    torch.set_num_threads(a.threads)
    t0 = time.time()
    run_dir, out = Path(a.run), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_world(a.world)
    horizons = sorted(float(x) for x in a.horizons.split(","))
    main_ckpt = run_dir / "checkpoint"
    if not (main_ckpt / "checkpoint.json").is_file():
        raise FileNotFoundError(f"--run: {main_ckpt} is missing; the ablation needs the main checkpoint (its VAE and heads score every row)")
    main_model = load_world_model(main_ckpt, world=spec.name)
    texts = PromptTexts.from_run(run_dir)
    cfg = _pipeline_cfg(run_dir)
    g_text = cfg.get("dmd", {}).get("guidance_text", 1.5)
    g_action = cfg.get("dmd", {}).get("guidance_action", 2.0)
    clip = a.teacher_clip_frames or cfg.get("teacher", {}).get("clip_latent_frames") or main_model.info.get("trained_clip_latent_frames")
    probe, probe_eval = resolve_probe(a.probe, spec.name, out, a.probe_steps, a.probe_episodes)
    episodes = real_rollouts(spec.name, a.episodes, horizons[-1], a.seed, variants=list(spec.variant_names))
    window = max(1, int(round((a.window_seconds or 10.0) * spec.fps / spec.frames_per_latent)))

    def student(ckpt: Path | WorldModel):
        m = ckpt if isinstance(ckpt, WorldModel) else load_world_model(ckpt, world=spec.name)
        return student_generate(m, spec, episodes, a.batch_size, a.window_seconds, texts)

    def teacher(path: Path, causal: bool):
        net = DiT.from_pretrained(path).eval()
        return teacher_generate(net, main_model, episodes, num_steps=a.teacher_steps, guidance_text=g_text, guidance_action=g_action,
                                   clip_frames=None if causal else clip, causal=causal, window_frames=window,
                                   batch_size=a.batch_size, texts=texts)

    def with_student(path: Path) -> WorldModel:
        """A bare student (e.g. a DMD snapshot) with the main checkpoint's VAE, heads and settings."""
        m = main_model
        return WorldModel(DiT.from_pretrained(path).eval(), m.vae, m.heads, m.schedule, m.world, dict(m.info, note=str(path)))

    ode_only = run_dir / "ablations" / "ode_init_only" / "checkpoint"
    ode_model = None
    if not (ode_only / "checkpoint.json").is_file() and _dit_dir(run_dir / "ode_init" / "model"):
        m = main_model
        ode_model = with_student(run_dir / "ode_init" / "model")
    rows = [  # (name, how it samples, available?, generate)
        ("many-step bidirectional teacher", f"{a.teacher_steps} steps, CFG, clip windows of {clip} latent frames",
         _dit_dir(run_dir / "teacher" / "model"), lambda: teacher(run_dir / "teacher" / "model", False)),
        ("many-step causal teacher", f"{a.teacher_steps} steps per chunk, CFG, KV cache",
         _dit_dir(run_dir / "causal_teacher" / "model"), lambda: teacher(run_dir / "causal_teacher" / "model", True)),
        (MAIN_ROW, "4 steps, KV cache", (main_ckpt / "checkpoint.json").is_file(), lambda: student(main_ckpt)),
        (f"self-forcing DMD, {a.budget_steps} steps", "4 steps, KV cache", _dit_dir(run_dir / "dmd_self_forcing" / f"model_step{a.budget_steps}"),
         lambda: student(with_student(run_dir / "dmd_self_forcing" / f"model_step{a.budget_steps}"))),
        (f"teacher-forcing DMD, {a.budget_steps} steps", "4 steps, KV cache", (run_dir / "checkpoint_teacher_forcing/checkpoint.json").is_file(),
         lambda: student(run_dir / "checkpoint_teacher_forcing")),
        ("no ODE init", "4 steps, KV cache", (run_dir / "ablations/no_ode_init/checkpoint/checkpoint.json").is_file(),
         lambda: student(run_dir / "ablations/no_ode_init/checkpoint")),
        ("causal-teacher DMD", "4 steps, KV cache", (run_dir / "ablations/causal_teacher/checkpoint/checkpoint.json").is_file(),
         lambda: student(run_dir / "ablations/causal_teacher/checkpoint")),
        ("ODE init only", "4 steps, KV cache", (ode_only / "checkpoint.json").is_file() or ode_model is not None,
         lambda: student(ode_model if ode_model is not None else ode_only)),
    ]
    methods, notes, timing = {}, {}, {}
    n_frames = sum(e.n for e in episodes)
    for name, how, ok, gen in rows:
        if not ok:
            notes[name] = "model not found in the run directory"
            continue
        gens, dt = timed(gen)
        methods[name] = gens
        timing[name] = {"sampling": how, "seconds": dt, "ms_per_frame": 1e3 * dt / max(1, n_frames)}
    methods["repeat_last_frame"] = repeat_last_frame(episodes)
    methods["vae_reconstruction"] = vae_reconstruction(main_model, episodes)
    methods["simulator_from_still_frame"] = simulator_from_still_frame(episodes, spec.name)
    table, _ = evaluate_methods(methods, episodes, horizons, spec.fps, probe)
    for name, why in notes.items():
        table[name] = {"skipped": why}
    result = {"kind": "ablation", "command": command, "args": asdict(a), "world": spec.name, "horizons_s": horizons,
              "guidance": {"text": g_text, "action": g_action}, "probe": probe_eval, "rows": table, "timing": timing,
              "paper_table4_vbench": PAPER_TABLE4, "episodes": episode_summaries(episodes, None, spec.fps),
              "total_s": time.time() - t0}
    write_json(out / "ablation.json", result)
    md = [f"# Ablation (the paper's Table 4) on {spec.name}", "", f"Command: `{command}`" if command else "",
          f"{len(episodes)} real episodes ({n_frames} frames), identical starts and actions for every row. "
          "Frame metrics pooled per horizon bin; termination over the first h seconds.", "", markdown_table(table, horizons, "row"), "",
          "| row | sampling | generation time | ms per frame | paper VBench temporal / frame / text |", "|---|---|---|---|---|"]
    for name, t in timing.items():
        md.append(f"| {name} | {t['sampling']} | {t['seconds']:.1f} s | {t['ms_per_frame']:.2f} | {PAPER_TABLE4.get(name, '-')} |")
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(p, Args)
    a = p.parse_args(argv)
    command = "python examples/ablation.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    res = run(Args(**vars(a)), command)
    print((Path(a.out) / "ablation.md").read_text())
    return res


if __name__ == "__main__":
    main()
