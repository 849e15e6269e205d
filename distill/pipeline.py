"""One command for the whole CausVid pipeline, every stage resumable and skipped once finished:

    collect -> VAE -> latent cache -> decoder fine-tune -> reward/termination heads -> state head -> bidirectional teacher
    -> ODE pairs -> ODE init -> asymmetric DMD -> checkpoint

    python -m distill.pipeline --world cartpole --out runs/cartpole [--preset tiny|default] [--set teacher.steps=8000]
    torchrun --standalone --nproc_per_node 2 -m distill.pipeline ...   # data-parallel training stages

Ablations (the paper's Table 4) reuse the finished shared stages and write to OUT/ablations/NAME:
    --ablation no_ode_init      DMD straight from the teacher's weights
    --ablation causal_teacher   DMD against a block-causal many-step teacher (diffusion forcing)
    --ablation ode_init_only    the ODE-initialised student, no DMD
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from causvid_env.checkpoint import default_checkpoint_dir, save_world_model
from causvid_env.probe import StateProbe
from causvid_env.worlds import get_world
from distill.batches import ClipSampler, PromptBank
from distill.branches import BranchCache, BranchSampler, action_state_correlation, encode_branches, generate_branches
from distill.collect import CollectConfig, collect
from distill.dataset import EpisodeDataset, LatentCache, build_latent_cache
from distill.dmd import ROLLOUTS, train_dmd
from distill.ode_init import train_ode_init
from distill.finetune_vae_decoder import AngleWeightedClips, finetune_decoder
from distill.ode_pairs import generate_ode_pairs, load_ode_pairs
from distill.presets import PRESETS, PipelineConfig, apply_overrides, get_preset, to_dict
from distill.train_heads import train_heads, train_state_head
from distill.train_teacher import sample_training_clips, train_teacher
from distill.train_vae import train_vae
from distill.training_utils import is_done, mark_done
from models.actions import ActionCodec, space_to_dict
from models.dit import DiT, DiTConfig
from models.heads import HeadsConfig, RewardTerminationHead, StateHead
from models.io import resolve_device
from models.schedule import FlowSchedule
from models.vae import CausalVAE, frames_to_tensor

ABLATIONS = ("none", "no_ode_init", "causal_teacher", "ode_init_only")


def log(msg: str) -> None:
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def held_out_split(n_episodes: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    perm = np.random.default_rng(seed).permutation(n_episodes)
    n_held = max(1, int(round(fraction * n_episodes)))
    return sorted(perm[n_held:].tolist()), sorted(perm[:n_held].tolist())


def vae_encode_fn(vae: CausalVAE, piece_frames: int = 64):
    """(T, H, W, 3) uint8 -> (T/F, C, h, w): streamed in pieces with the causal feature cache,
    which equals encoding the whole episode at once (tested) at bounded memory."""
    @torch.no_grad()
    def encode(frames: np.ndarray) -> np.ndarray:
        state = vae.init_stream_state(1)
        out = []
        for s in range(0, len(frames), piece_frames):
            z, state = vae.encode_step(frames_to_tensor(frames[None, s:s + piece_frames]), state)
            out.append(z[0].permute(1, 0, 2, 3))  # (C, T', h, w) -> (T', C, h, w)
        return torch.cat(out).numpy()
    return encode


def build_dit_config(cfg: PipelineConfig, spec, vae: CausalVAE) -> DiTConfig:
    v = vae.config
    return DiTConfig.from_size(cfg.dit_size, latent_channels=v.latent_channels, latent_height=v.latent_height,
                               latent_width=v.latent_width, action_space=space_to_dict(spec.make_action_space()),
                               frames_per_latent=spec.frames_per_latent, latent_frames_per_chunk=spec.latent_frames_per_chunk)


def reuse_vae(source: str | Path, stage_dir: Path) -> None:
    """Copy a trained VAE (a `save_pretrained` directory, e.g. a shipped checkpoint's `vae/`)
    in as this run's VAE stage."""
    source = Path(source)
    if not (source / "config.json").exists():
        raise FileNotFoundError(f"vae_from: {source} is not a saved VAE (no config.json); pass e.g. causvid_env/checkpoints/cartpole/vae")
    CausalVAE.from_pretrained(source)  # fails clearly if it does not load
    shutil.copytree(source, stage_dir / "vae", dirs_exist_ok=True)
    mark_done(stage_dir, {"reused_from": str(source)})


def warm_start(init_from: str, part: str) -> DiT | None:
    """The `part` ("teacher" or "student") of the checkpoint `init_from` to warm-start a stage from, or None."""
    if not init_from:
        return None
    path = Path(init_from) / part
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"--init-from {init_from}: no {part}/config.json there; pass a checkpoint directory such as "
                                f"causvid_env/checkpoints/cartpole (it holds teacher/ and student/)")
    return DiT.from_pretrained(path)


def action_correlation_card(clips: ClipSampler, branches: BranchSampler | None, cfg: PipelineConfig, batches: int = 200) -> dict:
    """How much each chunk's action says about the pole's lean and angular velocity (Pearson r), in the
    ordinary trunk clips, in the branch clips and pairs, and in the teacher's batch mix as trained."""
    rng = np.random.default_rng(cfg.seed + 99)
    T, n = cfg.teacher.clip_latent_frames, batches * cfg.teacher.batch_size
    F = clips.F
    card = {"clip_latent_frames": T, "trunk_clips": action_state_correlation(clips.sample(n, T, rng), F)}
    if branches is not None:
        card["branch_clips"] = action_state_correlation(branches.sample(n, T, rng)[0], F)
        left, right, _ = branches.pairs(n // 2, T, rng)
        card["branch_pairs"] = action_state_correlation(left + right, F)
        card["branch_groups"] = branches.b.num_groups
    mix = [c for _ in range(batches) for c in sample_training_clips(clips, branches, cfg.teacher, rng)[0]]
    card["teacher_batches"] = action_state_correlation(mix, F)
    return card


def correlation_markdown(card: dict, cfg: PipelineConfig) -> list[str]:
    """The data card's section on how much the actions say about the state."""
    b = cfg.branches
    lines = ["", "## Actions and state", "",
             "Pearson correlation between each chunk's action (0 = left, 1 = right) and the pole's lean and angular "
             "velocity just before it (0 = the action says nothing about the state, so a model has to learn its effect):", ""]
    names = {"trunk_clips": "collected episodes (the scripted mix)", "branch_clips": "branch clips (left / right / random from a saved state)",
             "branch_pairs": "left/right pairs (held pushes, shared tail)", "teacher_batches": "the teacher's training batches (as mixed)"}
    for key, name in names.items():
        if key in card:
            c = card[key]
            lines.append(f"- {name}: lean r = {c['pole_angle']:+.2f}, angular velocity r = {c['pole_velocity']:+.2f} ({c['decisions']} decisions)")
    if "branch_groups" in card:
        lines += ["", f"Branching: {card['branch_groups']} branch points in the training episodes ({b.points_per_episode} drawn per episode, "
                  f"{100 * b.p_start:.0f}% at the still start chunk), each continued for {b.chunks} chunks three ways: the left key held "
                  f"for h ~ U{{{b.min_hold}..{b.max_hold}}} chunks, the right key held as long, both then sharing one random tail; "
                  f"and a random action every chunk. Teacher batches: {100 * cfg.teacher.pair_fraction:.0f}% left/right pairs, "
                  f"{100 * cfg.teacher.branch_fraction:.0f}% single branch clips, the rest ordinary clips. Held pushes make the pairs' "
                  f"later decisions follow the lean they caused (negative r)."]
    return lines


STAGES = ("collect", "vae", "latents", "vae_decoder", "branches", "heads", "state_head", "teacher", "ode_pairs", "ode_init", "dmd")


def run_pipeline(world: str, out: str | Path, cfg: PipelineConfig, ablation: str = "none", rollout: str | None = None,
                 command: str = "", until: str | None = None, device: str | None = None, mixed_precision: str = "no") -> Path | None:
    """Run (or resume) every stage into `out`. `device` None: CUDA when available (each process its
    own GPU under torchrun / accelerate launch), else CPU; collection always runs on CPU workers.
    `mixed_precision` ("no", "bf16", "fp16") is passed to accelerate for the training stages."""
    from accelerate import Accelerator

    if cfg.student_init not in ("teacher", "checkpoint"):
        raise ValueError(f"--set student_init: expected 'teacher' or 'checkpoint', got {cfg.student_init!r}")
    if cfg.student_init == "checkpoint" and not cfg.init_from:
        raise ValueError("--set student_init=checkpoint needs --init-from CHECKPOINT (whose student/ ODE init starts from)")
    if ablation not in ABLATIONS:
        raise ValueError(f"--ablation: expected one of {ABLATIONS}, got {ablation!r}")
    dev = resolve_device(device, "--device")
    acc = Accelerator(cpu=dev.type == "cpu", mixed_precision=mixed_precision)
    main = acc.is_main_process
    out = Path(out)
    spec = get_world(world)
    if rollout is not None:
        cfg.dmd.rollout = rollout
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "pipeline_config.json"
    if main:
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            if old.get("preset") != cfg.preset:
                raise ValueError(f"--out {out} holds a run of preset {old.get('preset')!r}; use another --out for preset {cfg.preset!r}")
        cfg_path.write_text(json.dumps(to_dict(cfg) | {"world": world}, indent=2, default=list))

    # 1. data from the real simulator ------------------------------------------------------------
    data_dir = out / "data"
    if main:  # resumable: finished shards are verified and kept
        log("stage collect")
        c = cfg.collect
        collect(CollectConfig(world=world, out=str(data_dir), episodes=c.episodes, workers=c.workers, seed=cfg.seed,
                              max_frames=c.max_frames, episodes_per_shard=c.episodes_per_shard))
    acc.wait_for_everyone()
    episodes = EpisodeDataset(data_dir)
    train_ids, held_ids = held_out_split(len(episodes), cfg.heldout_fraction, cfg.seed)
    if main:
        (out / "split.json").write_text(json.dumps({"train": train_ids, "heldout": held_ids}))
    if until == "collect":
        return None

    # 2. VAE ------------------------------------------------------------------------------------
    vae_cfg = cfg.vae
    vae_cfg.vae.frame_height, vae_cfg.vae.frame_width = spec.frame_height, spec.frame_width
    vae_cfg.vae.temporal_down = spec.frames_per_latent
    vae_cfg.seed = cfg.seed
    vae_cfg.device = str(acc.device)
    if main and not is_done(out / "vae") and cfg.vae_from:
        log(f"stage vae: reusing the trained VAE {cfg.vae_from}")
        reuse_vae(cfg.vae_from, out / "vae")
    if main and not is_done(out / "vae"):
        log("stage vae")
        train_eps = EpisodeDataset.from_episodes([episodes[i] for i in train_ids], episodes.manifest, episodes.path)
        held_eps = EpisodeDataset.from_episodes([episodes[i] for i in held_ids], episodes.manifest, episodes.path)
        held = held_eps.sample_clips(vae_cfg.clip_frames, np.random.default_rng(cfg.seed + 1), vae_cfg.heldout_clips)["frames"]
        summary = train_vae(lambda B, T, rng: train_eps.sample_clips(T, rng, B)["frames"], vae_cfg, out / "vae", heldout_clips=held)
        log(f"vae: {summary}")
    acc.wait_for_everyone()
    vae = CausalVAE.from_pretrained(out / "vae" / "vae").eval()
    if until == "vae":
        return None

    # 3. latent cache, written once ---------------------------------------------------------------
    lat_path = out / "latents.safetensors"
    if main and not lat_path.exists():
        log("stage latents")
        build_latent_cache(episodes, vae_encode_fn(vae), lat_path, progress=True)
    acc.wait_for_everyone()
    cache = LatentCache.load(lat_path)
    train_clips = ClipSampler(cache, train_ids)
    if until == "latents":
        return None

    # 3a. the decoder fine-tuned alone (large pole angles; the encoder, so the latents above, unchanged) ----
    dcfg = cfg.vae_decoder
    if dcfg.steps > 0:
        dcfg.seed = cfg.seed
        if main and not is_done(out / "vae_decoder"):
            log("stage vae_decoder")
            summary = finetune_decoder(vae, AngleWeightedClips(episodes, train_ids, dcfg), dcfg, out / "vae_decoder",
                                       AngleWeightedClips(episodes, held_ids, dcfg) if held_ids else None)
            log(f"vae_decoder: {summary}")
        acc.wait_for_everyone()
        vae = CausalVAE.from_pretrained(out / "vae_decoder" / "vae").eval()
    if until == "vae_decoder":
        return None

    # 3b. branching episodes: the training trunks continued left / right / random from saved states ------
    branch_path = out / "branches.safetensors"
    if main and cfg.branches.points_per_episode > 0 and not branch_path.exists():
        log("stage branches")
        groups = generate_branches(spec, episodes, train_ids, cfg.branches, seed=cfg.seed, progress=True)
        encode_branches(groups, episodes, vae, progress=True).save(branch_path)
    acc.wait_for_everyone()
    branches = (BranchSampler(BranchCache.load(branch_path), cache, cfg.teacher.max_context_frames, cfg.branches.p_max_context)
                if cfg.branches.points_per_episode > 0 else None)
    corr_path = out / "action_correlation.json"
    if main:
        if corr_path.exists():
            corr = json.loads(corr_path.read_text())
        else:
            corr = action_correlation_card(train_clips, branches, cfg)
            corr_path.write_text(json.dumps(corr, indent=2))
        if (data_dir / "CARD.md").exists():  # collect rewrote the card: add the section again
            card = (data_dir / "CARD.md").read_text().split("\n## Actions and state")[0].rstrip("\n")
            (data_dir / "CARD.md").write_text(card + "\n" + "\n".join(correlation_markdown(corr, cfg)) + "\n")
    if until == "branches":
        return None

    # 4. prompts (MiniLM runs once) ---------------------------------------------------------------
    bank_path = out / "prompts.pt"
    if main and not bank_path.exists():
        torch.save(PromptBank(list(spec.prompts().values())).state(), bank_path)
    acc.wait_for_everyone()
    bank = PromptBank.from_state(torch.load(bank_path))
    codec = ActionCodec(space_to_dict(spec.make_action_space()))
    schedule = FlowSchedule(cfg.schedule)

    # 5. reward / termination heads on real latents -------------------------------------------------
    v = vae.config
    cfg.heads.heads = HeadsConfig(latent_channels=v.latent_channels, latent_height=v.latent_height, latent_width=v.latent_width,
                                  frames_per_latent=spec.frames_per_latent, hidden=cfg.heads.heads.hidden)
    if main and not is_done(out / "heads"):
        log("stage heads")
        train_heads(train_clips, cfg.heads, out / "heads")
    acc.wait_for_everyone()
    heads = RewardTerminationHead.from_pretrained(out / "heads" / "model")
    if until == "heads":
        return None

    # 5b. the state head the auxiliary action-effect losses of the teacher and of DMD read (frozen there) ----
    state_head = None
    if cfg.teacher.state_weight > 0 or cfg.dmd.state_weight > 0 or cfg.dmd.pair_weight > 0 or cfg.dmd.p_controller_actions > 0:
        h = cfg.state_head.head
        cfg.state_head.head = dataclasses.replace(h, latent_channels=v.latent_channels, latent_height=v.latent_height,
                                                  latent_width=v.latent_width, frames_per_latent=spec.frames_per_latent)
        cfg.state_head.seed = cfg.seed
        if main and not is_done(out / "state_head"):
            log("stage state_head")
            log(f"state_head: {train_state_head(train_clips, cfg.state_head, out / 'state_head', ClipSampler(cache, held_ids))}")
        acc.wait_for_everyone()
        state_head = StateHead.from_pretrained(out / "state_head" / "model")
    if until == "state_head":
        return None

    # 6. bidirectional teacher --------------------------------------------------------------------
    dit_cfg = build_dit_config(cfg, spec, vae)
    cfg.teacher.dit, cfg.teacher.schedule, cfg.teacher.seed = dit_cfg, cfg.schedule, cfg.seed
    if not is_done(out / "teacher"):
        log("stage teacher (bidirectional)")
        train_teacher(train_clips, codec, bank, cfg.teacher, out / "teacher", init_from=warm_start(cfg.init_from, "teacher"),
                      accelerator=acc, branches=branches, state_head=state_head)
    teacher = DiT.from_pretrained(out / "teacher" / "model").eval()
    if until == "teacher":
        return None

    # 7. ODE pairs -------------------------------------------------------------------------------
    if main and not is_done(out / "ode_pairs"):
        log("stage ode_pairs")
        generate_ode_pairs(teacher.to(acc.device), train_clips, codec, bank, schedule, cfg.ode_pairs, out / "ode_pairs")
        teacher.cpu()
    acc.wait_for_everyone()

    # 8. ODE init ----------------------------------------------------------------------------------
    if until == "ode_pairs":
        return None
    if ablation != "no_ode_init" and not is_done(out / "ode_init"):
        log("stage ode_init")
        train_ode_init(teacher, load_ode_pairs(out / "ode_pairs"), bank, schedule, cfg.ode_init, out / "ode_init", accelerator=acc,
                       init_from=warm_start(cfg.init_from, "student") if cfg.student_init == "checkpoint" else None)
    if until == "ode_init":
        return None

    # 9. asymmetric DMD (or an ablation of it) --------------------------------------------------------
    base = out if ablation == "none" else out / "ablations" / ablation
    real_score, causal = teacher, False
    if ablation == "causal_teacher":
        ct = dataclasses.replace(cfg.teacher, mode="causal", steps=cfg.causal_teacher_steps)
        if not is_done(out / "causal_teacher"):
            # warm start: --init-from's (bidirectional) teacher, the same network under the block-causal mask; the
            # branching clips and left/right pairs as the bidirectional teacher has them
            log("stage causal_teacher" + (f" (warm start from {cfg.init_from}/teacher)" if cfg.init_from else ""))
            train_teacher(train_clips, codec, bank, ct, out / "causal_teacher", init_from=warm_start(cfg.init_from, "teacher"),
                          accelerator=acc, branches=branches, state_head=state_head)
        real_score, causal = DiT.from_pretrained(out / "causal_teacher" / "model").eval(), True
    if ablation == "ode_init_only":
        student = DiT.from_pretrained(out / "ode_init" / "model")
    else:
        init = teacher if ablation == "no_ode_init" else DiT.from_pretrained(out / "ode_init" / "model")
        dmd_dir = base / f"dmd_{cfg.dmd.rollout}"
        if not is_done(dmd_dir):
            log(f"stage dmd ({cfg.dmd.rollout}, ablation={ablation})")
            ode_shards = load_ode_pairs(out / "ode_pairs") if cfg.dmd.ode_weight > 0 or cfg.dmd.ode_contrast_weight > 0 else None
            probe = None
            if cfg.dmd.physics_weight > 0:  # the physics loss reads the decoded rollouts with the frozen state probe
                probe = StateProbe.from_pretrained(cfg.dmd.physics_probe or default_checkpoint_dir(spec.name) / "probe").eval()
            train_dmd(init, real_score, train_clips, codec, bank, schedule, cfg.dmd, dmd_dir, causal_teacher=causal, accelerator=acc,
                      state_head=state_head, branches=branches, ode_shards=ode_shards, vae=vae, probe=probe, world=spec.name)
        student = DiT.from_pretrained(dmd_dir / "model")

    # 10. the checkpoint the env loads --------------------------------------------------------------
    ckpt = base / ("checkpoint" if cfg.dmd.rollout == ROLLOUTS[0] or ablation == "ode_init_only" else f"checkpoint_{cfg.dmd.rollout}")
    if main:
        info = {"preset": cfg.preset, "seed": cfg.seed, "ablation": ablation, "dmd_rollout": cfg.dmd.rollout,
                "command": command, "trained_clip_latent_frames": cfg.teacher.clip_latent_frames,
                "window_frames": (max(1, round(cfg.env_window_seconds * spec.fps / spec.frames_per_latent)) if cfg.env_window_seconds
                                  else cfg.dmd.window_frames),  # the env's default window
                "trained_window_frames": cfg.dmd.window_frames,  # the window of the self-forcing rollouts
                "context_noise": cfg.context_noise,
                "data": {"episodes": len(episodes), "frames": episodes.total_frames, "heldout_episodes": held_ids}}
        save_world_model(ckpt, student.eval(), vae, heads, schedule, world, info)
        log(f"checkpoint written to {ckpt}")
    acc.wait_for_everyone()
    return ckpt


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(
        description="Run the CausVid distillation pipeline end to end. Every stage checkpoints; re-running the same "
                    "command resumes the running stage and skips finished ones.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="presets (measured on a 2-core x86 CPU, one torch thread per job): tiny = a ~30 s smoke test of every stage "
               "(its model is noise); default = the shipped checkpoint, about 1.5 h (collect 4 min, heads 1 min, "
               "teacher 52 min, ODE pairs 7 min, ODE init 9.5 min, self-forcing DMD 100 steps ~14 min; the VAE adds ~20 min "
               "unless --set vae_from=DIR reuses a trained one); gpu = the same recipe scaled for one H100 (sized from "
               "measured step times, not yet timed end to end). Per-stage times: docs/RESULTS.md.")
    p.add_argument("--world", default="cartpole", help="world name (causvid_env.worlds)")
    p.add_argument("--out", required=True, help="run directory; stages already finished there are skipped")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="size of every stage (see below)")
    p.add_argument("--ablation", default="none", choices=ABLATIONS)
    p.add_argument("--rollout", default=None, choices=list(ROLLOUTS), help="DMD generator rollout (default: the preset's, self_forcing)")
    p.add_argument("--seed", type=int, default=0, help="seed of collection, splits and every training stage")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any preset value, e.g. --set teacher.steps=8000 --set dmd.rollout=teacher_forcing (repeatable)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="warm start: the teacher stage from CHECKPOINT/teacher (e.g. causvid_env/checkpoints/cartpole, the shipped "
                        "world model); with --set student_init=checkpoint ODE init also starts from CHECKPOINT/student")
    p.add_argument("--until", default=None, choices=STAGES, help="stop after this stage (the rest resumes later)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; None = all cores")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N; None = CUDA when available, else CPU")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                   help="accelerate mixed precision for the training stages (on this CPU bf16 is 4-5x slower: keep 'no')")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = get_preset(a.preset)
    cfg.seed = a.seed
    apply_overrides(cfg, a.overrides)
    if a.init_from:
        cfg.init_from = a.init_from
    command = "python -m distill.pipeline " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    return run_pipeline(a.world, a.out, cfg, a.ablation, a.rollout, command, a.until, a.device, a.mixed_precision)


if __name__ == "__main__":
    main()
