"""Closed-loop evaluation: the dream against the real world, under identical actions.

    python examples/closed_loop_eval.py --out runs/eval_closed_loop      # the shipped checkpoint and probe
    python examples/closed_loop_eval.py --checkpoint runs/cartpole/checkpoint --world cartpole \\
        --out runs/eval_closed_loop --episodes 12 --horizons 1,2,5,10,30 [--probe runs/probe]

For each episode the real twin is reset with a seed and driven for up to max(horizons) seconds by a
policy that reads the TWIN's true state (the balancing controller, the collection's noisy balancer)
or by random pushes held for several chunks; the dream is reset from the twin's first frame (an
image reset) under the variant's prompt and replays exactly those actions. Reported per horizon
bin: frame PSNR / SSIM, the state probe's pole-angle and cart-position error against the twin's
true state, reward error and termination timing -- next to the two baselines of CALIBRATION.md
(repeat-last-frame and the VAE's own reconstruction) and the probe's error on the real frames; with
--context-frames also the real simulator started from the state the probe reads off the clip (what
perfect physics reaches with what the frames show).

Writes OUT/metrics.json, OUT/table.md, OUT/error_vs_horizon.png, OUT/strip.png and
OUT/dream_vs_real.mp4 (dream | real). Without --probe the checkpoint's own probe (CHECKPOINT/probe,
shipped with the package's checkpoint) is used if it has one; otherwise a probe is trained first
(~2-4 min, 1 core) and saved to OUT/probe. Pass --probe DIR to reuse one (it is trained into DIR
when DIR is empty).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from causvid_env.checkpoint import default_checkpoint_dir, load_world_model
from causvid_env.worlds import get_world
from evaluation.metrics import episode_summaries, evaluate_methods
from evaluation.probe import resolve_probe
from evaluation.report import markdown_table, plot_error_vs_time, side_by_side_video, strip_image, timed
from evaluation.rollouts import (PromptTexts, real_rollouts, repeat_last_frame, simulator_from_probed_clip, simulator_from_still_frame,
                                 student_generate, teacher_generate, vae_reconstruction)
from models.dit import DiT
from models.config_utils import add_dataclass_args
from models.io import write_json
from models.samplers import check_temperature


@dataclass
class Args:
    out: str
    """output directory"""
    checkpoint: str | None = None
    """world-model checkpoint directory (checkpoint.json, student/, vae/, heads/); default: the one shipped for --world"""
    world: str = "cartpole"
    episodes: int = 12
    """real episodes; the policies (balance, held_random, noisy_balance) and variants cycle"""
    horizons: str = "1,2,5,10,30"
    """horizon bins in seconds; the longest is the rollout length"""
    probe: str | None = None
    """state-probe directory (trained into it when empty; default CHECKPOINT/probe if it exists, else OUT/probe)"""
    probe_steps: int = 1500
    probe_episodes: int = 32
    probe_data: str | None = None
    """train the probe from a collected dataset directory instead of fresh simulation"""
    seed: int = 10_000
    """seed of the first real episode (collection uses other seeds)"""
    context_frames: int = 0
    """real frames the dream is seeded with before it generates: 0 = an image reset from the first frame; 16 = the
    still chunk and 3 scripted chunks (a real clip, where velocities are visible); metrics count frames after it"""
    policies: str = "balance,held_random,noisy_balance"
    """comma list of action sources, cycled over episodes: balance (scripted controller on the twin's true
    state), noisy_balance (the collection's noisy balancer), held_random (random push held 2-8 chunks), random"""
    variants: str = "all"
    """'all' (cycle the world's variants), 'default', or a comma list of variant names"""
    batch_size: int = 8
    """dream envs per batched forward"""
    window_seconds: float | None = None
    """KV-cache window (default: the checkpoint's default window)"""
    context_noise: float | None = None
    """noise level of the cache-writing pass (default: the checkpoint's trained level)"""
    temperature: float | None = None
    """scale of the student's noise draws (default: the checkpoint's, else 1.0, the trained one)"""
    teacher_steps: int = 0
    """> 0: also score the checkpoint's bidirectional teacher (CHECKPOINT/teacher), sampled with this many Euler steps
    over clip windows of its trained length (0: no teacher row)"""
    teacher_guidance_action: float = 1.0
    """the teacher's action guidance (1.0: its best chunk-dynamics scale, the one DMD's real score uses)"""
    teacher_guidance_text: float = 1.5
    """the teacher's text guidance"""
    teacher_temperature: float = 1.0
    """scale of the teacher's starting noise per sampled window (1.0: the trained noise)"""
    teacher: str | None = None
    """the teacher's directory (a save_pretrained DiT; default CHECKPOINT/teacher), e.g. a training run's snapshot"""
    video_episodes: int = 3
    """episodes in the MP4 (the longest first)"""
    threads: int = 1


def parse_horizons(text: str) -> list[float]:
    try:
        hs = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--horizons: expected comma-separated seconds like 1,2,5,10,30, got {text!r}") from None
    if not hs or hs[0] <= 0:
        raise ValueError(f"--horizons: expected positive seconds, got {text!r}")
    return hs


def parse_variants(text: str, world: str) -> list[str | None]:
    spec = get_world(world)
    if text == "all":
        return list(spec.variant_names)
    if text == "default":
        return [None]
    names = [v.strip() for v in text.split(",") if v.strip()]
    for n in names:
        spec.variant(n)  # ValueError naming the variant
    return names


def _teacher_rollouts(args: Args, checkpoint: Path, model, episodes, texts):
    """The checkpoint's bidirectional teacher under the same scripts (image or clip resets)."""
    path = Path(args.teacher) if args.teacher else checkpoint / "teacher"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--teacher-steps: {path} has no teacher (config.json); pass --teacher DIR or a checkpoint "
                                "that ships one, or leave --teacher-steps at 0")
    teacher = DiT.from_pretrained(path).eval()
    clip = model.info.get("trained_clip_latent_frames")  # None: the whole episode as one clip
    return teacher_generate(teacher, model, episodes, num_steps=args.teacher_steps, guidance_text=args.teacher_guidance_text,
                            guidance_action=args.teacher_guidance_action, clip_frames=clip, batch_size=args.batch_size,
                            texts=texts, seed=args.seed, temperature=args.teacher_temperature)


def run(args: Args, command: str = "") -> dict:
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_world(args.world)
    horizons = parse_horizons(args.horizons)
    check_temperature(args.teacher_temperature, "--teacher-temperature", "the teacher's trained noise")
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint_dir(spec.name)
    model = load_world_model(checkpoint, world=spec.name)
    texts = PromptTexts.from_run(checkpoint.resolve().parent)
    probe_dir = args.probe
    if probe_dir is None and (checkpoint / "probe" / "config.json").is_file():
        probe_dir = str(checkpoint / "probe")
    probe, probe_eval = resolve_probe(probe_dir, spec.name, out, args.probe_steps, args.probe_episodes, args.probe_data)

    episodes, t_real = timed(real_rollouts, spec.name, args.episodes, horizons[-1], args.seed,
                                policies=[x.strip() for x in args.policies.split(",") if x.strip()],
                                variants=parse_variants(args.variants, spec.name), context_frames=args.context_frames)
    dream, t_dream = timed(student_generate, model, spec, episodes, args.batch_size, args.window_seconds, texts,
                              context_noise=args.context_noise, temperature=args.temperature)
    methods = {"dream (student)": dream, "repeat_last_frame": repeat_last_frame(episodes),
               "vae_reconstruction": vae_reconstruction(model, episodes),
               "simulator_from_still_frame": simulator_from_still_frame(episodes, spec.name)}
    t_teacher = None
    if args.teacher_steps > 0:
        methods["teacher (bidirectional)"], t_teacher = timed(
            _teacher_rollouts, args, checkpoint, model, episodes, texts)
    if args.context_frames and probe is not None and spec.name == "cartpole":
        methods["simulator_from_probed_clip"] = simulator_from_probed_clip(episodes, spec.name, probe)
    table, per_frame = evaluate_methods(methods, episodes, horizons, spec.fps, probe)

    names = probe.config.target_names if probe is not None else ()
    plot_error_vs_time(per_frame, spec.fps, out / "error_vs_horizon.png", target_names=names)
    longest = max(range(len(episodes)), key=lambda i: episodes[i].n)
    ep = episodes[longest]
    times = [t for t in (0.08, 0.5, 1, 2, 5, 10, 20, 30) if t * spec.fps <= ep.n] or [ep.n / spec.fps]
    strip_image({"real": ep.frames[ep.F:], "dream": dream[longest].frames, "repeat_last": methods["repeat_last_frame"][longest].frames},
                   times, spec.fps, out / "strip.png")
    order = sorted(range(len(episodes)), key=lambda i: -episodes[i].n)[:max(1, args.video_episodes)]
    side_by_side_video([(np.concatenate([episodes[i].frames[:episodes[i].F], dream[i].frames]), episodes[i].frames) for i in order],
                          spec.fps, out / "dream_vs_real.mp4")

    n_frames = sum(e.n for e in episodes)
    result = {
        "kind": "closed_loop",
        "command": command,
        "args": asdict(args),
        "checkpoint_info": {k: model.info.get(k) for k in ("preset", "seed", "ablation", "dmd_rollout", "command", "window_frames", "context_noise", "temperature")},
        "world": spec.name, "fps": spec.fps, "horizons_s": horizons,
        "horizon_semantics": "frame metrics pooled over generated frames in (previous horizon, horizon]; termination and "
                             "return metrics over the first `horizon` seconds; frames only while the real twin runs "
                             "(it runs on past termination until the world's run-on limit, like data collection)",
        "probe": probe_eval,
        "methods": table,
        "episodes": episode_summaries(episodes, dream, spec.fps),
        "timing": {"real_rollouts_s": t_real, "dream_s": t_dream, "dream_frames": n_frames,
                   "dream_frames_per_s": n_frames / t_dream if t_dream else None,
                   "teacher_s": t_teacher, "total_s": time.time() - t0},
        "files": ["metrics.json", "table.md", "error_vs_horizon.png", "strip.png", "dream_vs_real.mp4"],
    }
    write_json(out / "metrics.json", result)
    md = [f"# Closed-loop evaluation ({spec.name})", "", f"Command: `{command}`" if command else "",
          f"{len(episodes)} real episodes, {n_frames} frames compared; {result['horizon_semantics']}.", "",
          "Probe held-out error on real frames: " + ", ".join(f"{k} {v:.3f}" for k, v in probe_eval.items()
                                                            if k.endswith("_mae")), "",
          markdown_table(table, horizons)]
    (out / "table.md").write_text("\n".join(md))
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(p, Args)
    a = p.parse_args(argv)
    command = "python examples/closed_loop_eval.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    result = run(Args(**vars(a)), command)
    print((Path(a.out) / "table.md").read_text())
    return result


if __name__ == "__main__":
    main()
