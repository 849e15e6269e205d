"""Speed of the dream vs the slow teacher and vs the real simulator, in one run.

    python examples/benchmark.py --json docs/results/benchmark.json [--threads 1] [--device cuda]   # the shipped checkpoint and teacher
    python examples/benchmark.py --checkpoint runs/cartpole/checkpoint --teacher runs/cartpole/teacher --json OUT [--quick]

Measures (median wall clock, batch 1 unless stated):
- latency to the first chunk: the student's `reset(prompt)` (4 steps + cache write + decode + heads)
  vs the 50-step bidirectional teacher with CFG generating the same 10 s clip (a bidirectional model
  shows its first frame only when the whole clip is done) -> ratio;
- student frames/s at a full 10 s context (cache filled to the window first) vs the world's fps;
- KV cache vs recomputing the whole block-causal context for every chunk -> ratio;
- where a chunk's time goes at that context: the 4 denoising passes + cache write, the VAE decode
  of its 4 frames (or of its last frame only), the reward/termination heads;
- `CausVidVectorEnv` frames/s at batch 1, 8, 32 (short context: the `vector_steps` chunks after a
  reset) vs the real gymnasium CartPole-v1 stepping + rgb_array rendering of every frame; and with
  `obs_mode="last"` (only each chunk's last frame is decoded) vs the real env rendering every 4th
  frame;
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
from evaluation import benchmarks as bm
from models.io import write_json
from evaluation.rollouts import PromptTexts
from models.config_utils import add_dataclass_args
from models.dit import DiT
from models.io import resolve_device
from models.metrics import psnr
from models.samplers import Cond, pending_write, sample_chunk_fused, write_context


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
    """timed repeats (the per-chunk timings at a full context take 3x as many: this machine's timings vary by +-30%)"""
    threads: int = 1
    """torch threads on the CPU (the speed targets are for one)"""
    device: str = "cpu"
    """torch device of the dream ("cuda" on a GPU); the real simulator always runs on the CPU"""
    precision_chunks: int = 50
    """chunks of the float32 vs bfloat16/float16 student comparison (at the checkpoint's default window)"""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


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
    device = resolve_device(a.device, "--device")
    model = load_world_model(ckpt, device=device, world=spec.name)
    teacher = load_teacher(a.teacher or ckpt / "teacher").to(device)
    texts = PromptTexts.from_run(ckpt.resolve().parent)
    F = spec.frames_per_chunk
    s = model.student.config
    window_frames = max(s.latent_frames_per_chunk, int(round(a.seconds * spec.fps / s.frames_per_latent)))
    res: dict = {"kind": "benchmark", "command": command, "args": asdict(a), "device": str(device), "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
                 "world": spec.name, "native_fps": spec.fps, "frames_per_chunk": F,
                 "student_params_M": sum(p.numel() for p in model.student.parameters()) / 1e6,
                 "teacher_params_M": sum(p.numel() for p in teacher.parameters()) / 1e6}
    with torch.no_grad():
        # 1. latency to the first chunk ------------------------------------------------------------
        env = CausVidEnv(spec, checkpoint=model, text_encoder=texts, window_seconds=a.seconds, device=device)
        prompt = spec.variant().prompt
        env.reset(prompt, seed=0)  # warm-up (text embedding cached)
        student_first = bm.median_time(lambda: env.reset(prompt, seed=1), a.repeats)
        teacher_s = bm.teacher_clip_seconds(teacher, model.vae, model.schedule, window_frames, a.teacher_steps, a.guidance_text,
                                            a.guidance_action)
        res["latency"] = {"student_first_chunk_s": student_first, "teacher_clip_s": teacher_s, "teacher_steps": a.teacher_steps,
                          "teacher_latent_frames": window_frames, "teacher_over_student": teacher_s / student_first}
        # 2. student throughput at a full context window (the 10 s asked for, and the env's default window) ---
        res["student_full_context"] = full_context_speed(model, spec, texts, a.seconds, prompt, 3 * a.repeats, device)
        res["student_default_window"] = full_context_speed(model, spec, texts, None, prompt, 3 * a.repeats, device, breakdown=False)
        # 3. KV cache vs recompute ---------------------------------------------------------------------
        res["kv_cache"] = bm.kv_cache_vs_recompute(model.student, window_frames, steps=len(model.schedule.student_timesteps()),
                                                   repeats=a.repeats)
        separate = full_context_speed(model, spec, texts, a.seconds, prompt, 3 * a.repeats, device, breakdown=False,
                                      fused_writes=False)
        res["fused_writes"] = {"context_seconds": separate["context_seconds"], "separate_ms_per_chunk": separate["ms_per_chunk"],
                               "fused_ms_per_chunk": res["student_full_context"]["ms_per_chunk"],
                               "separate_over_fused": separate["ms_per_chunk"] / res["student_full_context"]["ms_per_chunk"]}
        # 4. vector env vs the real simulator -------------------------------------------------------------
        real = bm.real_gym_steps_per_s(spec.env_id, steps=60 if a.quick else 300)
        real_every = bm.real_gym_steps_per_s(spec.env_id, steps=60 if a.quick else 300, render_every=F)
        res["real_env"] = {"env_id": spec.env_id, "steps_per_s_with_render": real, f"steps_per_s_render_every_{F}": real_every}
        for key, obs_mode, baseline in [("vector_env", "chunk", real), ("vector_env_last_frame", "last", real_every)]:
            res[key] = {}
            for B in [int(x) for x in a.batches.split(",")]:
                venv = CausVidVectorEnv(B, spec, checkpoint=model, text_encoder=texts, timing_info=False, window_seconds=a.seconds,
                                        obs_mode=obs_mode, device=device)
                venv.reset(seed=0)
                acts = np.stack([venv.single_action_space.sample() for _ in range(B)])
                venv.step(acts)  # warm-up
                t0 = time.perf_counter()
                for _ in range(a.vector_steps):
                    venv.step(acts)
                dt = time.perf_counter() - t0
                fps = B * F * a.vector_steps / dt  # simulated frames (F per chunk), shown or not
                res[key][str(B)] = {"frames_per_s": fps, "steps_per_s": B * a.vector_steps / dt,
                                    "context_seconds_at_end": float(venv.engine.context_seconds().max()),
                                    "over_real_env": fps / baseline, "cache_MiB": venv.engine.memory_bytes() / 2**20}
                del venv
        # 5. lower-precision student (a GPU option): its fidelity cost against float32, and its CPU speed ---------
        res["student_precision"] = precision_cost(model, spec, texts, chunks=4 if a.quick else a.precision_chunks, device=device)
    res["memory"] = {"peak_rss_MiB": bm.peak_rss_mb(), "rss_MiB_now": bm.current_rss_mb()}
    res["total_s"] = time.time() - t_start
    res["ratios"] = ratio_rows(res)
    write_json(a.json, res)
    return res


def precision_cost(model, spec, texts, chunks: int, seed: int = 0, device="cpu") -> dict:
    """The same dream (seed, prompt, held-random actions) with the student in float32 and under
    bfloat16 / float16 autocast, at the checkpoint's default window: PSNR of each low-precision
    rollout against the float32 one over the first and the second half of the rollout (higher = the
    precision costs less; identical = inf), and the median ms per chunk of each on this device."""
    rng = np.random.default_rng(seed)
    F = spec.frames_per_chunk
    actions = np.repeat(rng.integers(0, 2, size=(chunks + 3) // 4), 4)[:chunks]  # each action held for 4 chunks
    out: dict = {"chunks": chunks, "seconds": chunks * F / spec.fps}
    frames: dict = {}
    for name, dtype in [("float32", None), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]:
        env = CausVidEnv(spec, checkpoint=model, text_encoder=texts, student_dtype=dtype, timing_info=True, run_on=True, device=device)
        obs, _ = env.reset(seed=seed)
        seq, times = [obs], []
        for a in actions:
            obs, *_, info = env.step(int(a))
            seq.append(obs)
            times.append(info["latency_s"])
        frames[name] = np.concatenate(seq)
        out[name] = {"ms_per_chunk": 1e3 * float(np.median(times))}
    half = len(frames["float32"]) // 2
    for name in ("bfloat16", "float16"):
        for part, sl in (("psnr_vs_float32_first_half", slice(0, half)), ("psnr_vs_float32_second_half", slice(half, None))):
            out[name][part] = psnr(frames[name][sl], frames["float32"][sl])
    return out


@torch.no_grad()
def full_context_speed(model, spec, texts, seconds: float | None, prompt: str, repeats: int, device="cpu", breakdown: bool = True,
                       fused_writes: bool = True) -> dict:
    """One env stepping with its window already full (`seconds`; None: the checkpoint's default
    window): ms per chunk and frames/s with the whole chunk decoded and with the last frame only.
    `fused_writes=False`: the reference engine that runs each chunk's cache write as a fifth pass."""
    F = spec.frames_per_chunk
    eng = DreamEngine(model, spec, 1, seconds, 0, device, texts, fused_writes=fused_writes)
    s = model.student.config
    eng.set_prompt(0, prompt)
    eng.chunk([None], reset=np.ones(1, bool))
    w = eng.window_frames
    n = w * s.frames_per_latent
    ctx = torch.randn(1, s.latent_channels, w, s.latent_height, s.latent_width).to(eng.device)
    write_context(model.student, eng.cache, ctx, Cond(torch.zeros(1, n, eng.codec.feature_dim, device=eng.device),
                                                      torch.ones(1, n, dtype=torch.bool, device=eng.device), eng.text()))
    action = np.zeros((F,), np.int64) if eng.codec.kind == "Discrete" else np.stack([eng.codec.space.sample()] * F)
    ts = bm.timings(lambda: eng.chunk([action]), repeats)
    t_chunk = float(np.median(ts))
    out = {"context_seconds": float(eng.context_seconds()[0]), "window_seconds": eng.window_seconds, "ms_per_chunk": 1e3 * t_chunk,
           "frames_per_s": F / t_chunk, "over_native_fps": F / t_chunk / spec.fps,
           "ms_per_chunk_min_max": [1e3 * min(ts), 1e3 * max(ts)], "repeats": len(ts)}
    eng.decode_frames = (eng.F - 1,)
    t_last = bm.median_time(lambda: eng.chunk([action]), repeats)
    eng.decode_frames = None
    out["last_frame_obs"] = {"ms_per_chunk": 1e3 * t_last, "frames_per_s": F / t_last, "over_native_fps": F / t_last / spec.fps}
    if breakdown:
        out["breakdown_ms"] = chunk_breakdown(eng, action, repeats)
    return out


def chunk_breakdown(eng: DreamEngine, action: np.ndarray, repeats: int) -> dict:
    """Milliseconds of each part of `eng.chunk` at the engine's current context, timed apart: the
    student's 4 passes (the first also writing the previous chunk's keys/values), the VAE decode
    (all frames / the last frame), the heads.
    The timed chunks slide the window like real steps (the sampler writes its chunk)."""
    model = eng.model
    af, an = eng.action_features([action] * eng.B)
    cond = Cond(af, an, eng.text())
    s = model.student.config
    noise = torch.randn(eng.B, s.latent_channels, eng.c, s.latent_height, s.latent_width).to(eng.device)
    x0 = noise.clone()
    renoise = [noise] * (len(eng.timesteps) - 1)
    pending = pending_write(x0, cond)  # the engine's path: the previous chunk's write fused with this chunk's first pass
    dit = bm.median_time(lambda: sample_chunk_fused(model.student, eng.cache, noise, cond, eng.timesteps, renoise, pending), repeats)
    vae = bm.median_time(lambda: model.vae.decode_step(x0, eng.vae_state), repeats)
    vae_last = bm.median_time(lambda: model.vae.decode_step(x0, eng.vae_state, (eng.F - 1,)), repeats)
    heads = bm.median_time(lambda: model.heads(x0, x0), repeats)
    return {"student_passes": 1e3 * dit, "vae_decode_all_frames": 1e3 * vae, "vae_decode_last_frame": 1e3 * vae_last, "heads": 1e3 * heads}


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
    last = full["last_frame_obs"]
    rows.append({"what": f"student frames/s at {full['context_seconds']:.1f} s context, last-frame observation / native fps",
                 "a": f"{last['frames_per_s']:.1f}", "b": f"{res['native_fps']}", "ratio": last["over_native_fps"]})
    fw = res.get("fused_writes")
    if fw:
        rows.append({"what": f"chunk at {fw['context_seconds']:.1f} s context: cache write as its own pass / fused into the next chunk's first pass",
                     "a": f"{fw['separate_ms_per_chunk']:.1f} ms", "b": f"{fw['fused_ms_per_chunk']:.1f} ms", "ratio": fw["separate_over_fused"]})
    dw = res.get("student_default_window")
    if dw:
        for label, v in (("", dw), (", last-frame observation", dw["last_frame_obs"])):
            rows.append({"what": f"student frames/s at the default {dw['context_seconds']:.2f} s window{label} / native fps",
                         "a": f"{v['frames_per_s']:.1f}", "b": f"{res['native_fps']}", "ratio": v["over_native_fps"]})
    prec = res.get("student_precision")
    if prec:
        for name in ("bfloat16", "float16"):
            p = prec[name]
            rows.append({"what": f"student under {name} autocast / float32, ms per chunk on this device (PSNR vs the float32 dream: "
                                 f"{p['psnr_vs_float32_first_half']:.1f} / {p['psnr_vs_float32_second_half']:.1f} dB over 0-{prec['seconds'] / 2:.1f} / "
                                 f"{prec['seconds'] / 2:.1f}-{prec['seconds']:.1f} s)",
                         "a": f"{p['ms_per_chunk']:.1f} ms", "b": f"{prec['float32']['ms_per_chunk']:.1f} ms",
                         "ratio": p["ms_per_chunk"] / prec["float32"]["ms_per_chunk"]})
    real = res["real_env"]
    every = next(k for k in real if k.startswith("steps_per_s_render_every_"))
    for B, v in res["vector_env"].items():
        rows.append({"what": f"vector env batch {B} frames/s ({v['context_seconds_at_end']:.2f} s context at the end) / real {real['env_id']} (step+render)",
                     "a": f"{v['frames_per_s']:.1f}", "b": f"{real['steps_per_s_with_render']:.1f}", "ratio": v["over_real_env"]})
    for B, v in res["vector_env_last_frame"].items():
        rows.append({"what": f"vector env batch {B}, last-frame obs, frames/s ({v['context_seconds_at_end']:.2f} s context) / real {real['env_id']} (step, render every {every.rsplit('_', 1)[1]}th)",
                     "a": f"{v['frames_per_s']:.1f}", "b": f"{real[every]:.1f}", "ratio": v["over_real_env"]})
    return rows


def format_table(res: dict) -> str:
    lines = ["| measurement | a | b | a / b |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['a']} | {r['b']} | {r['ratio']:.2f}x |" for r in res["ratios"]]
    lines.append(f"| peak RSS | {res['memory']['peak_rss_MiB']:.0f} MiB | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(p, Args)
    a = p.parse_args(argv)
    command = "python examples/benchmark.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    res = run(Args(**vars(a)), command)
    print(format_table(res))
    return res


if __name__ == "__main__":
    main()
