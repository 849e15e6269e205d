"""The whole distillation pipeline end to end with the tiny preset, plus kill/resume."""
import dataclasses

import numpy as np
import pytest
import torch

from distill.pipeline import run_pipeline
from distill.presets import tiny
from models.io import read_log


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    ckpt = run_pipeline("cartpole", out, tiny())
    return out, ckpt


def _falls(path, key):
    vals = [r[key] for r in read_log(path) if key in r]
    assert len(vals) >= 4, f"too few {key} records"
    k = max(2, len(vals) // 4)
    return np.mean(vals[:k]), np.mean(vals[-k:])


@pytest.mark.slow  # the tiny pipeline run: ~45 s on a busy 2-core CPU
def test_pipeline_produces_a_playable_checkpoint(tiny_run):
    out, ckpt = tiny_run
    from causvid_env.env import CausVidEnv
    env = CausVidEnv(checkpoint=ckpt)
    obs, _ = env.reset(seed=0)
    obs, r, term, trunc, info = env.step(1)
    assert obs.shape == (4, 64, 96, 3) and np.isfinite(r)
    for stage in ("vae", "vae_decoder", "heads", "state_head", "teacher", "ode_pairs", "ode_init", "dmd_self_forcing"):
        assert (out / stage / "DONE").is_file(), stage
    assert (out / "data" / "CARD.md").is_file()


@pytest.mark.slow  # the tiny pipeline run: ~45 s on a busy 2-core CPU
def test_losses_fall(tiny_run):
    out, _ = tiny_run
    for stage, key in (("teacher", "losses/teacher"), ("ode_init", "losses/ode_init"), ("vae", "vae/loss")):
        first, last = _falls(out / stage / "log.jsonl", key)
        assert last < first, (stage, first, last)


@pytest.mark.slow  # the tiny pipeline run: ~45 s on a busy 2-core CPU
def test_dmd_changes_the_student(tiny_run):
    out, _ = tiny_run
    from models.dit import DiT
    a = DiT.from_pretrained(out / "ode_init" / "model")
    b = DiT.from_pretrained(out / "dmd_self_forcing" / "model")
    diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    assert diff > 0
    cfg = a.config
    x = torch.randn(1, cfg.latent_channels, 2, cfg.latent_height, cfg.latent_width)
    t = torch.full((1, 2), 0.8)
    af = torch.zeros(1, 8, 2)
    an = torch.ones(1, 8, dtype=torch.bool)
    with torch.no_grad():
        ta = a.encode_text(torch.zeros(1, 1, 384), torch.ones(1, 1, dtype=torch.bool), torch.tensor([True]))
        tb = b.encode_text(torch.zeros(1, 1, 384), torch.ones(1, 1, dtype=torch.bool), torch.tensor([True]))
        assert (a(x, t, af, an, ta) - b(x, t, af, an, tb)).abs().max() > 1e-5


@pytest.mark.slow  # the tiny pipeline run: ~45 s on a busy 2-core CPU
def test_rerun_skips_finished_stages(tiny_run, capsys):
    out, ckpt = tiny_run
    before = (ckpt / "student" / "model.safetensors").read_bytes()
    run_pipeline("cartpole", out, tiny())
    text = capsys.readouterr().out
    assert "stage teacher" not in text and "stage dmd" not in text
    assert (ckpt / "student" / "model.safetensors").read_bytes() == before


class Killed(Exception):
    pass


def test_killed_training_resumes_with_nothing_lost(tiny_run, tmp_path):
    """A teacher run killed after its step-4 checkpoint, then resumed, ends with exactly the
    weights of an uninterrupted run."""
    out, _ = tiny_run
    from distill.batches import ClipSampler, PromptBank
    from distill.dataset import LatentCache
    from distill.pipeline import build_dit_config
    from distill.train_teacher import train_teacher
    from causvid_env.worlds import get_world
    from models.actions import ActionCodec, space_to_dict
    from models.dit import DiT
    from models.vae import CausalVAE

    spec = get_world("cartpole")
    cache = LatentCache.load(out / "latents.safetensors")
    bank = PromptBank.from_state(torch.load(out / "prompts.pt"))
    codec = ActionCodec(space_to_dict(spec.make_action_space()))
    p = tiny()
    vae = CausalVAE.from_pretrained(out / "vae" / "vae")
    cfg = dataclasses.replace(p.teacher, steps=8, save_every=4, log_every=1, state_weight=0.0, dit=build_dit_config(p, spec, vae))

    class Sampler(ClipSampler):
        calls = 0
        kill_at = None

        def sample(self, *a, **k):
            Sampler.calls += 1
            if self.kill_at is not None and Sampler.calls == self.kill_at:
                raise Killed()
            return super().sample(*a, **k)

    full = Sampler(cache)
    train_teacher(full, codec, bank, cfg, tmp_path / "full")
    killed = Sampler(cache)
    Sampler.calls, killed.kill_at = 0, 7  # dies during step 7, after the step-4 checkpoint
    with pytest.raises(Killed):
        train_teacher(killed, codec, bank, cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "DONE").exists()
    killed.kill_at = None
    train_teacher(killed, codec, bank, cfg, tmp_path / "resumed")
    a = DiT.from_pretrained(tmp_path / "full" / "model")
    b = DiT.from_pretrained(tmp_path / "resumed" / "model")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_killed_ode_init_resumes_with_nothing_lost(tiny_run, tmp_path):
    """The ODE-init stage through the stage runner: killed after its step-2 checkpoint, then
    resumed, it ends with exactly the weights of an uninterrupted run."""
    out, _ = tiny_run
    from distill.batches import PromptBank
    from distill.ode_init import train_ode_init
    from distill.ode_pairs import load_ode_pairs
    from models.dit import DiT
    from models.schedule import FlowSchedule

    p = tiny()
    teacher = DiT.from_pretrained(out / "teacher" / "model")
    bank = PromptBank.from_state(torch.load(out / "prompts.pt"))
    schedule = FlowSchedule(p.schedule)
    cfg = dataclasses.replace(p.ode_init, steps=4, save_every=2, log_every=1)

    class Shards(list):  # pair_batch indexes the shard list once per step
        kill_at, calls = None, 0

        def __getitem__(self, i):
            Shards.calls += 1
            if Shards.calls == self.kill_at:
                raise Killed()
            return super().__getitem__(i)

    shards = load_ode_pairs(out / "ode_pairs")
    train_ode_init(teacher, Shards(shards), bank, schedule, cfg, tmp_path / "full")
    dying = Shards(shards)
    Shards.calls, dying.kill_at = 0, 4  # dies during step 4
    with pytest.raises(Killed):
        train_ode_init(teacher, dying, bank, schedule, cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "DONE").exists()
    train_ode_init(teacher, Shards(shards), bank, schedule, cfg, tmp_path / "resumed")
    a = DiT.from_pretrained(tmp_path / "full" / "model").state_dict()
    b = DiT.from_pretrained(tmp_path / "resumed" / "model").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow  # reuses the tiny pipeline run: ~45 s on a busy 2-core CPU
def test_dmd_stage_runs_the_physics_loss_with_the_shipped_probe(tiny_run, tmp_path):
    """dmd.physics_weight > 0 through the pipeline: the stage gets the run's VAE and the shipped probe
    (dmd.physics_probe empty) and logs the physics loss; dmd_weight 0 trains no fake score."""
    import shutil
    out, _ = tiny_run
    run = tmp_path / "phys"
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("dmd_self_forcing", "checkpoint"))
    cfg = tiny()
    cfg.dmd = dataclasses.replace(cfg.dmd, steps=2, log_every=1, dmd_weight=0.0, physics_weight=1.0, physics_rows=1,
                                  physics_max_angle_deg=16.0)
    run_pipeline("cartpole", run, cfg)
    rows = [r for r in read_log(run / "dmd_self_forcing" / "log.jsonl") if "losses/physics" in r]
    assert rows and all(np.isfinite(r["losses/physics"]) and r["losses/fake_score"] == 0.0 for r in rows)
