"""Where a model loses the action, measured in latent space against the teacher's ODE results.

On contrast ODE pairs (`distill.ode_pairs`, `num_contrast_pairs`: one real context, two action
scripts that differ in every chunk, the same starting noise), the teacher's 20-step guided ODE gives
two results; their difference is the action's effect as the teacher draws it. A model's one-step
clean prediction from the teacher's own state at each student level gives two predictions, and

    ratio = <d_model, d_teacher> / <d_teacher, d_teacher>   (1: the whole effect, 0: none)
    miss  = |d_model - d_teacher|^2 / |d_teacher|^2          (0: the teacher's effect exactly)

per student level (level 0 is the first step, from noise) and per generated chunk (chunk 0 is the
first after the real context, where a push first shows). Pairs without a real context are left out
(from a prompt alone the bidirectional teacher draws a different scene for each script). A causal student is run as in ODE
initialisation (block-causal, the clean copy of earlier chunks being the teacher's results); the
bidirectional teacher sees every generated frame at the level, as it does in DMD's real score.

    python -m evaluation.action_effect --pairs runs/contrast_eval --make-from runs/v12o \\
        --model student=causvid_env/checkpoints/cartpole/student --json out.json

`--make-from RUN` writes held-out contrast pairs into `--pairs` first (RUN's teacher, held-out
episodes, guidance 1.0) when that folder holds none.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from models.dit import DiT
from models.io import write_json
from models.masks import teacher_forcing_mask
from models.schedule import FlowSchedule, ScheduleConfig


def probe_readout(vae, probe, frames_per_latent: int):
    """latents (B, C, T, h, w) -> (B, T, Q): the probe's reading (pole angle in degrees, cart x in
    metres, ...) of the last decoded video frame of every latent frame."""
    from models.vae import tensor_to_frames

    def read(z: torch.Tensor) -> torch.Tensor:
        frames = tensor_to_frames(vae.decode(z))  # (B, T*F, H, W, 3)
        last = frames[:, frames_per_latent - 1::frames_per_latent]
        B, T = last.shape[:2]
        return torch.from_numpy(probe.predict(last.reshape(B * T, *last.shape[2:]))).view(B, T, -1)

    return read


@torch.no_grad()
def effect_ratios(model: DiT, shards: list[dict], bank, schedule: FlowSchedule, causal: bool, readout=None,
                  readout_names: tuple = ()) -> dict:
    """{'level': [{ratio, miss} per student level], 'chunk': [{ratio, miss} per generated chunk, all levels],
    'level_chunk0': [...]} summed over every contrast pair in `shards`. With `readout` (latents ->
    (B, T, Q), e.g. `probe_readout`) also 'read_level_chunk0' and 'read_level': the same ratios of
    what the readout sees (per quantity, named by `readout_names`), from decoded frames."""
    from distill.ode_init import contrast_shards, student_cond

    ts = schedule.student_timesteps()
    S = len(ts)
    chunk = model.config.latent_frames_per_chunk
    dot, norm, err = {}, {}, {}

    def add(key, d_m, d_t):
        dot[key] = dot.get(key, 0.0) + float((d_m * d_t).sum())
        norm[key] = norm.get(key, 0.0) + float(d_t.pow(2).sum())
        err[key] = err.get(key, 0.0) + float((d_m - d_t).pow(2).sum())

    def add_read(kind, s, r_m, r_t):  # readings (h, Tg, Q) of the two rows' difference
        for q in range(r_t.shape[-1]):
            add((kind, (s, q)), r_m[..., q], r_t[..., q])

    for sh in contrast_shards(shards, True):  # those with a real context
        k, real, x0 = sh["context_frames"], sh["real"], sh["x0"]
        B, T = real.shape[0], real.shape[2]
        h = B // 2
        cond = student_cond(model, bank, sh)
        x_clean = torch.cat([real[:, :, :k], x0], dim=2)
        d_true = x0[:h] - x0[h:]
        if readout is not None:
            r_true = readout(x_clean)[:, k:]
            rd_true = r_true[:h] - r_true[h:]
        for s in range(S):
            x_in = torch.cat([real[:, :, :k], sh["states"][s]], dim=2)
            t = torch.cat([torch.zeros(B, k), torch.full((B, T - k), float(ts[s]))], dim=1)
            if causal:
                v = model(x_in, t, cond.action_feats, cond.action_null, cond.text, frame_mask=teacher_forcing_mask(T, chunk),
                          x_clean=x_clean, t_clean=torch.zeros(B, T))
            else:
                v = model(x_in, t, cond.action_feats, cond.action_null, cond.text)
            pred = schedule.x0_from_v(x_in, v, t)[:, :, k:]
            d_pred = pred[:h] - pred[h:]
            if readout is not None:
                r = readout(torch.cat([real[:, :, :k], pred], dim=2))[:, k:]
                rd = r[:h] - r[h:]
                add_read("read_level_chunk0", s, rd[:, :chunk], rd_true[:, :chunk])
                add_read("read_level", s, rd, rd_true)
            for c0 in range(0, T - k, chunk):  # generated chunks, counted from the first after the context
                ci = c0 // chunk
                sl = slice(c0, c0 + chunk)
                add(("level", s), d_pred[:, :, sl], d_true[:, :, sl])
                add(("chunk", ci), d_pred[:, :, sl], d_true[:, :, sl])
                if ci == 0:
                    add(("level_chunk0", s), d_pred[:, :, sl], d_true[:, :, sl])

    out = {}
    for kind in ("level", "chunk", "level_chunk0"):
        keys = sorted(i for (kk, i) in dot if kk == kind)
        out[kind] = [{"index": i, "ratio": dot[(kind, i)] / norm[(kind, i)], "miss": err[(kind, i)] / norm[(kind, i)]} for i in keys]
    for kind in ("read_level_chunk0", "read_level"):
        keys = sorted(i for (kk, i) in dot if kk == kind)
        if keys:
            names = list(readout_names) or [str(q) for q in range(max(q for _, q in keys) + 1)]
            out[kind] = [{"level": s, "quantity": names[q], "ratio": dot[(kind, (s, q))] / max(norm[(kind, (s, q))], 1e-12),
                          "miss": err[(kind, (s, q))] / max(norm[(kind, (s, q))], 1e-12)} for s, q in keys]
    if not out["level"]:
        raise ValueError("shards: no contrast shards among them; generate them with ode_pairs.num_contrast_pairs > 0")
    tot_dot = sum(v for (kk, _), v in dot.items() if kk == "level")
    tot_norm = sum(v for (kk, _), v in norm.items() if kk == "level")
    tot_err = sum(v for (kk, _), v in err.items() if kk == "level")
    out["all"] = {"ratio": tot_dot / tot_norm, "miss": tot_err / tot_norm}
    return out


def run_schedule(run: Path) -> FlowSchedule:
    """The noise schedule a pipeline run trained with (its pipeline_config.json)."""
    conf = json.loads((run / "pipeline_config.json").read_text())
    return FlowSchedule(ScheduleConfig(**conf["schedule"])) if conf.get("schedule") else FlowSchedule()


def make_heldout_contrasts(run: Path, pairs_dir: Path, num_contrast_pairs: int, seed: int = 1) -> None:
    """Contrast ODE pairs from `run`'s teacher on its held-out episodes (guidance 1.0, the run's schedule)."""
    from distill.batches import ClipSampler, PromptBank
    from distill.dataset import LatentCache
    from distill.ode_pairs import ODEPairsConfig, generate_ode_pairs
    from models.actions import ActionCodec

    conf = json.loads((run / "pipeline_config.json").read_text())
    held = json.loads((run / "split.json").read_text())["heldout"]
    if not held:
        raise ValueError(f"--make-from {run}: the run has no held-out episodes")
    teacher = DiT.from_pretrained(run / "teacher" / "model").float().eval()
    bank = PromptBank.from_state(torch.load(run / "prompts.pt"))
    codec = ActionCodec(teacher.config.action_space)
    p = conf["ode_pairs"]
    cfg = ODEPairsConfig(num_pairs=0, batch_size=16, clip_latent_frames=p["clip_latent_frames"], context_frames=p["context_frames"],
                         max_context_frames=p["max_context_frames"], p_no_context=p["p_no_context"], num_steps=p["num_steps"],
                         guidance_text=p["guidance_text"], guidance_action=1.0, seed=seed, num_contrast_pairs=num_contrast_pairs)
    schedule = run_schedule(run)
    generate_ode_pairs(teacher, ClipSampler(LatentCache.load(run / "latents.safetensors"), held), codec, bank, schedule, cfg, pairs_dir)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="folder of ODE pairs with contrast shards")
    ap.add_argument("--make-from", default=None, help="a pipeline run whose teacher writes held-out contrast pairs into --pairs first")
    ap.add_argument("--num-contrast-pairs", type=int, default=128)
    ap.add_argument("--prompts", default=None, help="prompts.pt of the run (default: --make-from's)")
    ap.add_argument("--model", action="append", default=[], help="NAME=DIR of a causal student (repeatable)")
    ap.add_argument("--teacher", action="append", default=[], help="NAME=DIR of a bidirectional teacher (repeatable)")
    ap.add_argument("--probe-checkpoint", default=None,
                    help="a world-model checkpoint whose VAE and probe/ also read the effect off decoded frames (pole angle, cart x)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from distill.batches import PromptBank
    from distill.ode_init import contrast_shards
    from distill.ode_pairs import load_ode_pairs

    pairs = Path(a.pairs)
    if a.make_from and not (pairs / "DONE").is_file():
        make_heldout_contrasts(Path(a.make_from), pairs, a.num_contrast_pairs)
    prompts = a.prompts or (a.make_from and str(Path(a.make_from) / "prompts.pt"))
    if not prompts:
        raise ValueError("--prompts: give the run's prompts.pt (or --make-from RUN)")
    bank = PromptBank.from_state(torch.load(prompts))
    shards = load_ode_pairs(pairs)
    schedule = run_schedule(Path(a.make_from)) if a.make_from else FlowSchedule()
    readout, names = None, ()
    if a.probe_checkpoint:
        from causvid_env.checkpoint import load_world_model
        from evaluation.probe import load_probe

        wm = load_world_model(a.probe_checkpoint)
        probe, _ = load_probe(Path(a.probe_checkpoint) / "probe")
        readout, names = probe_readout(wm.vae.float().eval(), probe, wm.student.config.frames_per_latent), tuple(probe.config.target_names)
    used = contrast_shards(shards, True)
    res = {"pairs": str(pairs), "contrast_pairs": int(sum(s["x0"].shape[0] // 2 for s in used)), "models": {}}
    for spec, causal in [(m, True) for m in a.model] + [(m, False) for m in a.teacher]:
        if "=" not in spec:
            raise ValueError(f"--model/--teacher: expected NAME=DIR, got {spec!r}")
        name, d = spec.split("=", 1)
        model = DiT.from_pretrained(d).float().eval()
        r = effect_ratios(model, shards, bank, schedule, causal, readout, names)
        res["models"][name] = {"dir": d, "causal": causal, **r}
        lv = " ".join(f"{x['ratio']:.2f}" for x in r["level_chunk0"])
        ch = " ".join(f"{x['ratio']:.2f}" for x in r["chunk"])
        print(f"{name:>24}: effect ratio {r['all']['ratio']:.2f} (miss {r['all']['miss']:.2f}); first chunk by level {lv}; "
              f"by chunk {ch}", flush=True)
        if "read_level_chunk0" in r:
            for q in names:
                rows = [x for x in r["read_level_chunk0"] if x["quantity"] == q]
                allc = [x for x in r["read_level"] if x["quantity"] == q]
                print(f"{'':>24}  {q}: first chunk by level " + " ".join(f"{x['ratio']:.2f}" for x in rows)
                      + "; all chunks by level " + " ".join(f"{x['ratio']:.2f}" for x in allc), flush=True)
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
