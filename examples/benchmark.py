"""Speed of the dream vs the slow teacher and vs the real simulator, in one run.

    python examples/benchmark.py --json docs/results/benchmark.json [--threads 1]      # the shipped checkpoint and teacher
    python examples/benchmark.py --checkpoint runs/cartpole/checkpoint --teacher runs/cartpole/teacher --json OUT [--quick]

Measures (median wall clock, batch 1 unless stated):
- latency to the first chunk: the student's `reset(prompt)` (4 steps + cache write + decode + heads)
  vs the 50-step bidirectional teacher with CFG generating the same 10 s clip (a bidirectional model
  shows its first frame only when the whole clip is done) -> ratio;
- student frames/s at a full 10 s context (cache filled to the window first) vs the world's fps;
- KV cache vs recomputing the whole block-causal context for every chunk -> ratio;
- `CausVidVectorEnv` frames/s at batch 1, 8, 32 (short context) vs the real gymnasium CartPole-v1
  stepping + rgb_array rendering;
- peak memory (RSS) of the process.
`--quick` shrinks every size (for the tests); its numbers mean nothing.
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
from causvid_env.engine import DreamEngine
from causvid_env.env import CausVidEnv
from causvid_env.vector_env import CausVidVectorEnv
from causvid_env.worlds import get_world
import evaluation as ev
from evaluation import benchmarks as bm
from models.dit import DiT
from models.samplers import Cond, write_context


@dataclass
class Args:
    json: str
    """where to write the results"""
    checkpoint: str | None = None
    """world-model checkpoint directory (default: the one shipped for the world)"""
    teacher: str | None = None
    """bidirectional teacher DiT directory (OUT/teacher or OUT/teacher/model; default: CHECKPOINT/teacher, shipped with the package)"""
    world: str = "cartpole"
    quick: bool = False
    """tiny sizes for a smoke test"""
    seconds: float = 10.0
    """clip length of the teacher comparison and the student's context window"""
    teacher_steps: int = 50
    guidance_text: float = 1.5
    guidance_action: float = 2.0
    batches: str = "1,8,32"
    """vector-env batch sizes"""
    vector_steps: int = 10
    """timed vector-env steps per batch size"""
    repeats: int = 5
    threads: int = 1


def load_teacher(path: str | Path) -> DiT:
    p = Path(path)
    if not (p / "config.json").is_file() and (p / "model" / "config.json").is_file():
        p = p / "model"
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"teacher: {path} holds no DiT (config.json); pass OUT/teacher or OUT/teacher/model")
    return DiT.from_pretrained(p).eval()


def run(a: Args, command: str = "") -> dict:
    torch.set_num_threads(a.threads)
    t_start = time.time()
    spec = get_world(a.world)
    if a.quick:
        a.seconds, a.teacher_steps, a.batches, a.vector_steps, a.repeats = 0.32, 2, "1,2", 2, 1
    ckpt = Path(a.checkpoint) if a.checkpoint else default_checkpoint_dir(spec.name)
    model = load_world_model(ckpt, world=spec.name)
    teacher = load_teacher(a.teacher or ckpt / "teacher")
    texts = ev.PromptTexts.from_run(ckpt.resolve().parent)
    F = spec.frames_per_chunk
    s = model.student.config
    window_frames = max(s.latent_frames_per_chunk, int(round(a.seconds * spec.fps / s.frames_per_latent)))
    res: dict = {"kind": "benchmark", "command": command, "args": asdict(a), "device": "cpu", "torch_threads": torch.get_num_threads(),
                 "world": spec.name, "native_fps": spec.fps, "frames_per_chunk": F,
                 "student_params_M": sum(p.numel() for p in model.student.parameters()) / 1e6,
                 "teacher_params_M": sum(p.numel() for p in teacher.parameters()) / 1e6}
    with torch.no_grad():
        # 1. latency to the first chunk ------------------------------------------------------------
        env = CausVidEnv(spec, checkpoint=model, text_encoder=texts, window_seconds=a.seconds)
        prompt = spec.variant().prompt
        env.reset(prompt, seed=0)  # warm-up (text embedding cached)
        student_first = bm.median_time(lambda: env.reset(prompt, seed=1), a.repeats)
        teacher_s = bm.teacher_clip_seconds(teacher, model.vae, model.schedule, window_frames, a.teacher_steps, a.guidance_text,
                                            a.guidance_action)
        res["latency"] = {"student_first_chunk_s": student_first, "teacher_clip_s": teacher_s, "teacher_steps": a.teacher_steps,
                          "teacher_latent_frames": window_frames, "teacher_over_student": teacher_s / student_first}
        # 2. student throughput at a full context window ---------------------------------------------
        eng = DreamEngine(model, spec, 1, a.seconds, 0, "cpu", texts)
        eng.set_prompt(0, prompt)
        eng.chunk([None], reset=np.ones(1, bool))
        n = window_frames * s.frames_per_latent
        ctx = torch.randn(1, s.latent_channels, window_frames, s.latent_height, s.latent_width)
        write_context(model.student, eng.cache, ctx, Cond(torch.zeros(1, n, eng.codec.feature_dim), torch.ones(1, n, dtype=torch.bool), eng.text()))
        action = np.zeros((F,), np.int64) if eng.codec.kind == "Discrete" else np.stack([env.action_space.sample()] * F)
        t_chunk = bm.median_time(lambda: eng.chunk([action]), max(3, a.repeats))
        ctx_s = float(eng.context_seconds()[0])
        res["student_full_context"] = {"context_seconds": ctx_s, "ms_per_chunk": 1e3 * t_chunk, "frames_per_s": F / t_chunk,
                                       "over_native_fps": F / t_chunk / spec.fps}
        # 3. KV cache vs recompute ---------------------------------------------------------------------
        res["kv_cache"] = bm.kv_cache_vs_recompute(model.student, window_frames, steps=len(model.schedule.student_timesteps()),
                                                   repeats=a.repeats)
        # 4. vector env vs the real simulator -------------------------------------------------------------
        real = bm.real_gym_steps_per_s(spec.env_id, steps=60 if a.quick else 300)
        res["real_env"] = {"env_id": spec.env_id, "steps_per_s_with_render": real}
        res["vector_env"] = {}
        for B in [int(x) for x in a.batches.split(",")]:
            venv = CausVidVectorEnv(B, spec, checkpoint=model, text_encoder=texts, timing_info=False, window_seconds=a.seconds)
            venv.reset(seed=0)
            acts = np.stack([venv.single_action_space.sample() for _ in range(B)])
            venv.step(acts)  # warm-up
            t0 = time.perf_counter()
            for _ in range(a.vector_steps):
                venv.step(acts)
            dt = time.perf_counter() - t0
            fps = B * F * a.vector_steps / dt
            res["vector_env"][str(B)] = {"frames_per_s": fps, "steps_per_s": B * a.vector_steps / dt,
                                         "context_seconds_at_end": float(venv.engine.context_seconds().max()),
                                         "over_real_env": fps / real, "cache_MiB": venv.engine.memory_bytes() / 2**20}
            del venv
    res["memory"] = {"peak_rss_MiB": bm.peak_rss_mb(), "rss_MiB_now": bm.current_rss_mb()}
    res["total_s"] = time.time() - t_start
    res["ratios"] = ratio_rows(res)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    ev.write_json(a.json, res)
    return res


def ratio_rows(res: dict) -> list[dict]:
    lat, full, kv = res["latency"], res["student_full_context"], res["kv_cache"]
    rows = [
        {"what": f"latency to first frames: teacher {lat['teacher_steps']}-step clip / student first chunk",
         "a": f"{lat['teacher_clip_s']:.3f} s", "b": f"{lat['student_first_chunk_s'] * 1e3:.1f} ms", "ratio": lat["teacher_over_student"]},
        {"what": f"student frames/s at {full['context_seconds']:.1f} s context / native fps",
         "a": f"{full['frames_per_s']:.1f}", "b": f"{res['native_fps']}", "ratio": full["over_native_fps"]},
        {"what": f"recompute {kv['context_latent_frames']}-frame context / KV cache, per chunk",
         "a": f"{kv['recompute_ms_per_chunk']:.1f} ms", "b": f"{kv['cache_ms_per_chunk']:.1f} ms", "ratio": kv["recompute_over_cache"]},
    ]
    for B, v in res["vector_env"].items():
        rows.append({"what": f"vector env batch {B} frames/s / real {res['real_env']['env_id']} (step+render)",
                     "a": f"{v['frames_per_s']:.1f}", "b": f"{res['real_env']['steps_per_s_with_render']:.1f}", "ratio": v["over_real_env"]})
    return rows


def format_table(res: dict) -> str:
    lines = ["| measurement | a | b | a / b |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['a']} | {r['b']} | {r['ratio']:.2f}x |" for r in res["ratios"]]
    lines.append(f"| peak RSS | {res['memory']['peak_rss_MiB']:.0f} MiB | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ev.add_dataclass_args(p, Args)
    a = p.parse_args(argv)
    command = "python examples/benchmark.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    res = run(Args(**vars(a)), command)
    print(format_table(res))
    return res


if __name__ == "__main__":
    main()
