"""The invariant everything rests on: cached chunk-by-chunk inference == full block-causal forward."""
import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from models.actions import ActionCodec, ActionEncoder, space_to_dict
from models.dit import DiT, DiTConfig
from models.masks import block_causal_mask, teacher_forcing_mask
from models.samplers import Cond, ode_sample, student_sample_chunk, write_context
from models.schedule import FlowSchedule


def random_model(chunk=1, seed=0, **kw):
    torch.manual_seed(seed)
    m = DiT(DiTConfig.from_size("tiny", latent_frames_per_chunk=chunk, **kw)).eval()
    with torch.no_grad():  # AdaLN-Zero starts as the identity: perturb so every path matters
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def inputs(m, B=2, T=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = m.config
    x = torch.randn(B, cfg.latent_channels, T, cfg.latent_height, cfg.latent_width, generator=g)
    t = torch.rand(B, T, generator=g)
    af = torch.nn.functional.one_hot(torch.randint(0, 2, (B, T * 4), generator=g), 2).float()
    an = torch.rand(B, T * 4, generator=g) < 0.2
    text = m.encode_text(torch.randn(B, 5, 384, generator=g), torch.ones(B, 5, dtype=torch.bool), torch.tensor([False] + [True] * (B - 1)))
    return x, t, af, an, text


def run_cached(m, x, t, af, an, text, window, sink=0):
    c = m.config.latent_frames_per_chunk
    cache = m.new_cache(x.shape[0], window_frames=window, sink_frames=sink)
    outs = []
    for s in range(0, x.shape[2], c):
        e = min(s + c, x.shape[2])
        outs.append(m.forward_chunk(x[:, :, s:e], t[:, s:e], af[:, 4 * s:4 * e], an[:, 4 * s:4 * e], text, cache, write=True))
    return torch.cat(outs, 2), cache


@pytest.mark.parametrize("chunk", [1, 2, 3])
@torch.no_grad()
def test_cached_equals_block_causal(chunk):
    m = random_model(chunk)
    x, t, af, an, text = inputs(m, T=6)
    full = m(x, t, af, an, text, frame_mask=block_causal_mask(6, chunk))
    cached, _ = run_cached(m, x, t, af, an, text, window=100)
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()


@pytest.mark.parametrize("chunk,window,sink", [(1, 2, 0), (2, 2, 0), (1, 3, 1), (2, 4, 2)])
@torch.no_grad()
def test_cached_sliding_window_equals_windowed_mask(chunk, window, sink):
    m = random_model(chunk)
    T = 10
    x, t, af, an, text = inputs(m, T=T)
    full = m(x, t, af, an, text, frame_mask=block_causal_mask(T, chunk, window, sink))
    cached, cache = run_cached(m, x, t, af, an, text, window=window, sink=sink)
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()
    # and the window really drops context: a full-context run differs on late chunks
    no_window = m(x, t, af, an, text, frame_mask=block_causal_mask(T, chunk))
    assert (no_window[:, :, -1] - full[:, :, -1]).abs().max() > 1e-3
    assert int(cache.context_frames().max()) <= window + sink


@torch.no_grad()
def test_rollout_shorter_than_window_is_unchanged_by_window():
    m = random_model(1)
    x, t, af, an, text = inputs(m, T=5)
    a, _ = run_cached(m, x, t, af, an, text, window=5)
    b, _ = run_cached(m, x, t, af, an, text, window=50)
    assert torch.allclose(a, b, atol=1e-6)


@torch.no_grad()
def test_teacher_forcing_equals_clean_cache_then_noisy_chunk():
    m = random_model(2)
    T = 6
    x_noisy, t, af, an, text = inputs(m, T=T)
    x_clean = torch.randn_like(x_noisy)
    tf = m(x_noisy, t, af, an, text, frame_mask=teacher_forcing_mask(T, 2), x_clean=x_clean)
    cache = m.new_cache(2, window_frames=100)
    for s in range(0, T, 2):
        sl, al = slice(s, s + 2), slice(4 * s, 4 * s + 8)
        v = m.forward_chunk(x_noisy[:, :, sl], t[:, sl], af[:, al], an[:, al], text, cache, write=False)
        assert torch.allclose(v, tf[:, :, sl], atol=1e-5), (v - tf[:, :, sl]).abs().max()
        m.forward_chunk(x_clean[:, :, sl], torch.zeros(2, 2), af[:, al], an[:, al], text, cache, write=True)


@torch.no_grad()
def test_bidirectional_and_causal_differ_where_they_should():
    m = random_model(1)
    x, t, af, an, text = inputs(m, T=4)
    causal = m(x, t, af, an, text, frame_mask=block_causal_mask(4, 1))
    bidir = m(x, t, af, an, text)
    # earlier frames see the future only bidirectionally
    assert (causal[:, :, 0] - bidir[:, :, 0]).abs().max() > 1e-3
    x2 = x.clone()
    x2[:, :, 3] += 1.0
    causal2 = m(x2, t, af, an, text, frame_mask=block_causal_mask(4, 1))
    bidir2 = m(x2, t, af, an, text)
    assert torch.allclose(causal2[:, :, :3], causal[:, :, :3], atol=1e-6)  # the past ignores the future
    assert (bidir2[:, :, 0] - bidir[:, :, 0]).abs().max() > 1e-4


@torch.no_grad()
def test_conditioning_reaches_output():
    m = random_model(1)
    x, t, af, an, text = inputs(m, T=3)
    base = m(x, t, af, an, text)
    assert (m(x, t, 1 - af, an, text) - base).abs().max() > 1e-4  # actions matter
    assert (m(x, t.flip(1), af, an, text) - base).abs().max() > 1e-4  # timesteps matter
    text2 = m.encode_text(torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool), torch.tensor([False, False]))
    assert (m(x, t, af, an, text2) - base).abs().max() > 1e-4  # the prompt matters


def test_save_load_round_trip_and_errors(tmp_path):
    m = random_model(1)
    m.save_pretrained(tmp_path / "dit")
    m2 = DiT.from_pretrained(tmp_path / "dit")
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    # corrupted weights
    w = tmp_path / "dit" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        DiT.from_pretrained(tmp_path / "dit")
    # mismatched config: weights saved for another width
    m.save_pretrained(tmp_path / "dit")
    cfg = json.loads((tmp_path / "dit" / "config.json").read_text())
    cfg["dim"] = 96
    cfg["num_heads"] = 4
    (tmp_path / "dit" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        DiT.from_pretrained(tmp_path / "dit")
    cfg["bogus_key"] = 1
    (tmp_path / "dit" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="bogus_key"):
        DiT.from_pretrained(tmp_path / "dit")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiT.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="size"):
        DiTConfig.from_size("XXL")


@pytest.mark.parametrize("space,good,bad", [
    (spaces.Discrete(3), [0, 2, 1], [3]),
    (spaces.Discrete(2, start=-1), [-1, 0], [1]),
    (spaces.Box(-2.0, 2.0, (1,), np.float32), [[0.5], [-2.0]], [[2.5]]),
    (spaces.MultiDiscrete([2, 3]), [[1, 2], [0, 0]], [[2, 0]]),
    (spaces.MultiBinary(3), [[1, 0, 1]], [[2, 0, 1]]),
])
def test_action_spaces_encode_and_reject(space, good, bad):
    d = space_to_dict(space)
    codec = ActionCodec(d)
    feats = codec.to_features(np.array(good))
    assert feats.shape == (len(good), codec.feature_dim) and np.isfinite(feats).all()
    enc = ActionEncoder(d, frames_per_latent=2, embed_dim=8, out_dim=16)
    f = torch.from_numpy(np.concatenate([feats, feats])[:2][None])
    out = enc(f, torch.tensor([[False, True]]))
    assert out.shape == (1, 1, 16)
    null_out = enc(f, torch.tensor([[True, True]]))
    assert not torch.allclose(out, null_out)  # the learned null differs from a real action
    with pytest.raises(ValueError, match="action"):
        codec.to_features(np.array(bad))
    for s in (good, bad):
        assert space.contains(np.array(s[0], dtype=space.dtype)) == (s is good)


@torch.no_grad()
def test_student_sampler_streams_and_writes_cache():
    m = random_model(1)
    x, t, af, an, text = inputs(m, B=2, T=3)
    sched = FlowSchedule()
    ts = sched.student_timesteps()
    assert len(ts) == 4 and torch.all(ts[:-1] > ts[1:])
    cache = m.new_cache(2, window_frames=8)
    cond = Cond(af, an, text)
    write_context(m, cache, x[:, :, :1], cond.frames(0, 1, 4))
    assert int(cache.next_frame[0]) == 1
    x0, _ = student_sample_chunk(m, cache, torch.randn(2, 8, 1, 8, 12), cond.frames(1, 2, 4), ts)
    assert x0.shape == (2, 8, 1, 8, 12) and int(cache.next_frame[0]) == 2
    # the written chunk is what the next one sees: same noise, different history -> different output
    noise = torch.randn(2, 8, 1, 8, 12)
    a, _ = student_sample_chunk(m, cache, noise, cond.frames(2, 3, 4), ts, renoise=[torch.zeros_like(noise)] * 3, write=False)
    cache2 = m.new_cache(2, window_frames=8)
    b, _ = student_sample_chunk(m, cache2, noise, cond.frames(2, 3, 4), ts, renoise=[torch.zeros_like(noise)] * 3, write=False)
    assert (a - b).abs().max() > 1e-4


@torch.no_grad()
def test_teacher_ode_sampler_records_student_levels():
    m = random_model(1)
    x, t, af, an, text = inputs(m, B=2, T=4)
    null = m.encode_text(torch.zeros(2, 1, 384), torch.ones(2, 1, dtype=torch.bool), torch.tensor([True, True]))
    sched = FlowSchedule()
    ts = sched.student_timesteps()
    cond = Cond(af, an, text, null)
    noise = torch.randn(2, 8, 3, 8, 12)
    same = dict(context=x[:, :, :1], num_steps=6, record_at=ts)  # record_at adds its levels to the step grid
    guided = dict(same, guidance_text=2.0, guidance_action=3.0)
    x0, rec = ode_sample(m, sched, noise, cond, **guided)
    assert x0.shape == (2, 8, 3, 8, 12) and len(rec) == 4 and torch.isfinite(x0).all()
    assert sorted(rec, reverse=True) == [round(float(t), 6) for t in ts]  # recorded exactly at the student's levels
    assert all(not torch.equal(rec[a], rec[b]) for a, b in zip(sorted(rec), sorted(rec)[1:]))  # the ODE moved between levels
    again, _ = ode_sample(m, sched, noise.clone(), cond, **guided)
    assert torch.equal(x0, again)  # deterministic given the noise
    # same noise, only the guidance differs: the guided sample must differ from the plain one
    plain, _ = ode_sample(m, sched, noise, cond, **same)
    assert (x0 - plain).abs().max() > 1e-3
    text_only, _ = ode_sample(m, sched, noise, cond, guidance_text=2.0, **same)
    assert (x0 - text_only).abs().max() > 1e-3 and (text_only - plain).abs().max() > 1e-3


@torch.no_grad()
def test_envs_at_different_places_in_the_cache_match_single_env_runs():
    """Envs of one batch whose chunks sit at different cache slots (one reset mid-rollout) take the
    scatter path; envs in step take the shared-range path. Both equal running each env alone."""
    m = random_model()
    x, t, af, an, text = inputs(m, B=2, T=7)
    cache = m.new_cache(2, window_frames=3)
    outs = []
    for s in range(7):
        if s == 3:
            cache.reset(torch.tensor([False, True]))  # env 1 starts over: its slots now differ from env 0's
        plan = m.plan_chunk(cache, 1)
        assert (plan.slot_range is None) == (s >= 3)
        outs.append(m.forward_chunk(x[:, :, s:s + 1], t[:, s:s + 1], af[:, 4 * s:4 * s + 4], an[:, 4 * s:4 * s + 4], text, cache,
                                    write=True, plan=plan))
    out = torch.cat(outs, 2)
    for i, (a, b) in [(0, (0, 7)), (1, (3, 7))]:
        ti = type(text)(text.tokens[i:i + 1], text.mask[i:i + 1], text.pooled[i:i + 1], [tuple(z[i:i + 1] for z in kv) for kv in text.kv])
        alone, _ = run_cached(m, x[i:i + 1, :, a:b], t[i:i + 1, a:b], af[i:i + 1, 4 * a:4 * b], an[i:i + 1, 4 * a:4 * b], ti, window=3)
        assert torch.allclose(out[i:i + 1, :, a:b], alone, atol=1e-5), (out[i:i + 1, :, a:b] - alone).abs().max()


@pytest.mark.parametrize("chunk,window,sink", [(1, 3, 0), (2, 4, 0), (1, 2, 1), (2, 2, 2)])
@torch.no_grad()
def test_fused_writes_equal_separate_writes(chunk, window, sink):
    """Folding each chunk's cache-writing pass into the next chunk's first step (what the env does)
    gives the chunks of the reference sampler (a separate writing pass after every chunk), through
    window evictions, an attention sink, context noise and one env starting over mid-rollout."""
    from models.samplers import pending_write, sample_chunk_fused

    m = random_model(chunk)
    B, n_chunks, level = 2, 7, 0.1
    x, t, af, an, text = inputs(m, B=B, T=chunk * n_chunks)
    ts = torch.tensor([0.9, 0.6, 0.3])
    g = torch.Generator().manual_seed(0)
    shape = (B, m.config.latent_channels, chunk, m.config.latent_height, m.config.latent_width)
    draws = [[torch.randn(shape, generator=g) for _ in range(4)] for _ in range(n_chunks)]
    ref_cache = m.new_cache(B, window, sink_frames=sink * chunk)
    cache = m.new_cache(B, window, sink_frames=sink * chunk, fused_writes=True)
    pending = None
    for k in range(n_chunks):
        cond = Cond(af[:, 4 * chunk * k:4 * chunk * (k + 1)], an[:, 4 * chunk * k:4 * chunk * (k + 1)], text)
        noise, r1, r2, eps = draws[k]
        if k == 4:  # env 1 starts over
            mask = torch.tensor([False, True])
            ref_cache.reset(mask)
            cache.reset(mask)
            pending.envs = pending.envs & ~mask
        want, _ = student_sample_chunk(m, ref_cache, noise, cond, ts, renoise=[r1, r2], context_noise=level, context_eps=eps)
        got = sample_chunk_fused(m, cache, noise, cond, ts, [r1, r2], pending)
        pending = pending_write(got, cond, level, eps)
        assert torch.allclose(got, want, atol=1e-5), (k, (got - want).abs().max())
        assert torch.equal(cache.context_frames(pending.envs.long() * chunk), ref_cache.context_frames())


def test_cache_bookkeeping_stays_on_the_host():
    """Slot bookkeeping is kept on the CPU whatever device holds the keys/values, so planning a
    chunk (how many slots are used, whether a mask is needed, where the chunk goes) never reads
    from a GPU. Buffers on the 'meta' device stand in for one here: any read would fail."""
    from models.kv_cache import KVCache

    cache = KVCache(num_layers=2, batch_size=2, num_heads=2, head_dim=8, tokens_per_frame=3, window_frames=2,
                    chunk_frames=1, device="meta", fused_writes=True)
    assert cache.k.device.type == "meta" and cache.slot_frame.device.type == "cpu"
    for _ in range(4):
        frames, tok, valid = cache.begin_chunk()
        assert {frames.device.type, tok.device.type, valid.device.type} == {"cpu"}
        cache.advance()
    frames, tok, valid = cache.begin_fused(torch.tensor([True, False]))
    assert valid.device.type == "cpu" and valid.shape[:2] == (2, 2)
    cache.finish_fused(torch.tensor([True, False]))
    assert cache.next_frame.tolist() == [5, 4] and cache.context_frames().tolist() == [2, 2]


def test_ode_sampling_builds_no_graph():
    """The teacher's ODE sampler runs without autograd even when called with gradients on and the
    model's weights trainable (ODE pairs, the teacher's rollouts): nothing it returns carries a graph."""
    m = random_model(1)
    assert any(p.requires_grad for p in m.parameters()) and torch.is_grad_enabled()
    x, t, af, an, text = inputs(m, B=1, T=3)
    null = m.encode_text(torch.zeros(1, 1, 384), torch.ones(1, 1, dtype=torch.bool), torch.tensor([True]))
    ts = FlowSchedule().student_timesteps()
    x0, rec = ode_sample(m, FlowSchedule(), torch.randn(1, 8, 2, 8, 12), Cond(af, an, text, null),
                         context=x[:, :, :1], num_steps=3, record_at=ts, guidance_text=2.0)
    assert not x0.requires_grad and not any(r.requires_grad for r in rec.values())
