"""Data collection, shards, resume, the episode dataset and the latent cache."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import json

import numpy as np
import pytest

from distill.collect import CollectConfig, collect, main
from distill.dataset import EpisodeDataset, LatentCache, LatentClipDataset, build_latent_cache


def _collect(out, episodes, seed=0, **kw):
    cfg = CollectConfig(world=kw.pop("world", "cartpole"), out=str(out), episodes=episodes, seed=seed,
                        max_frames=kw.pop("max_frames", 48), episodes_per_shard=2, **kw)
    return collect(cfg, progress=False)


def _shas(manifest):
    return [(s["file"], s["episodes"], s["sha256"]) for s in manifest["shards"]]


def test_collect_format_and_determinism(tmp_path):
    m1 = _collect(tmp_path / "a", 3)
    m2 = _collect(tmp_path / "b", 3)
    assert _shas(m1) == _shas(m2) and m1["num_episodes"] == 3
    assert _shas(_collect(tmp_path / "c", 3, seed=1)) != _shas(m1)
    assert (tmp_path / "a" / "CARD.md").read_text().startswith("# Data card: cartpole")
    ds = EpisodeDataset(tmp_path / "a")
    assert len(ds) == 3 and ds.total_frames == m1["num_frames"]
    for e in ds.episodes:
        n = len(e)
        assert n % 4 == 0 and 8 <= n <= 48
        assert e.frames.shape == (n, 64, 96, 3) and e.frames.dtype == np.uint8
        assert e.states.shape == (n, 4) and e.actions.shape == (n,)
        assert not e.action_mask[:4].any() and e.action_mask[4:].all()
        assert all(np.array_equal(f, e.frames[0]) for f in e.frames[:4])
        assert e.truncated[-1] != e.terminated[-1] and not e.truncated[:-1].any()
        assert e.prompt in ds.prompts


def test_resume_loses_and_duplicates_nothing(tmp_path):
    one_shot = _collect(tmp_path / "one", 7)
    _collect(tmp_path / "resumed", 3)  # shard 0 full, shard 1 partial
    resumed = _collect(tmp_path / "resumed", 7)
    assert _shas(resumed) == _shas(one_shot) and resumed["num_episodes"] == 7
    with pytest.raises(ValueError, match="different settings"):
        _collect(tmp_path / "resumed", 7, seed=5)


def test_corrupt_and_missing_shards_are_reported(tmp_path):
    out = tmp_path / "d"
    _collect(out, 6)
    with open(out / "shard_00001.npz", "r+b") as f:  # truncate one shard
        f.truncate(100)
    with pytest.warns(UserWarning, match="shard_00001.npz"):
        ds = EpisodeDataset(out)
    assert len(ds) == 4 and ds.bad_shards == ["shard_00001.npz"]
    # an undetected-by-checksum corruption (manifest not consulted) still fails loudly per shard
    with pytest.warns(UserWarning, match="shard_00001.npz"):
        assert len(EpisodeDataset(out, verify=False)) == 4
    for name in ("shard_00000.npz", "shard_00002.npz"):
        os.remove(out / name)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no shard could be loaded"):
        EpisodeDataset(out)
    _collect(out, 6)  # resuming repairs the damaged shards
    assert len(EpisodeDataset(out)) == 6


def test_clips_split_and_latent_cache(tmp_path):
    _collect(tmp_path / "e", 4, max_frames=64)
    ds = EpisodeDataset(tmp_path / "e")
    rng = np.random.default_rng(0)
    clip = ds.sample_clips(8, rng)
    assert clip["frames"].shape == (8, 64, 96, 3) and clip["start"] % 4 == 0
    assert clip["actions"].shape == (8,) and isinstance(clip["prompt"], str)
    batch = ds.sample_clips(8, rng, batch_size=3)
    assert batch["frames"].shape == (3, 8, 64, 96, 3) and len(batch["prompt"]) == 3
    assert all(c["start"] % 4 == 0 for c in ds.iter_clips(8))
    with pytest.raises(ValueError, match="num_frames"):
        ds.sample_clips(6, rng)
    train, held = ds.split(0.25, seed=0)
    assert len(train) == 3 and len(held) == 1
    assert {id(e) for e in train.episodes}.isdisjoint({id(e) for e in held.episodes})

    def encode(frames):  # mean-pool 4 frames and 8x8 pixels -> (T/4, 3, 8, 12)
        t = frames.astype(np.float32).reshape(-1, 4, 8, 8, 12, 8, 3).mean(axis=(1, 3, 5))
        return t.transpose(0, 3, 1, 2)

    path = tmp_path / "lat.safetensors"
    cache = build_latent_cache(ds, encode, path)
    loaded = LatentCache.load(path)
    assert len(loaded) == len(ds) and loaded.strings == cache.strings
    for e, z in zip(ds.episodes, loaded.latents):
        np.testing.assert_array_equal(z, encode(e.frames))
    assert np.array_equal(loaded.arrays[0]["actions"], ds.episodes[0].actions)
    clips = LatentClipDataset(path, num_latent=2)
    item = clips[0]
    assert item["latents"].shape == (2, 3, 8, 12) and item["actions"].shape == (8,)
    assert item["prompt"] == ds.episodes[item["episode"]].prompt
    assert clips.sample(4, rng)["latents"].shape == (4, 2, 3, 8, 12)
    # chunked encoding gives the same result for a per-chunk encoder
    chunked = build_latent_cache(ds, encode, batch_frames=8)
    assert all(np.array_equal(a, b) for a, b in zip(chunked.latents, cache.latents))


def test_cli_pendulum(tmp_path):
    out = tmp_path / "p"
    main(["--world", "pendulum", "--out", str(out), "--episodes", "2", "--max-frames", "16", "--no-progress"])
    m = json.loads((out / "manifest.json").read_text())
    assert m["world"] == "pendulum" and m["num_frames"] == 32
    e = EpisodeDataset(out).episodes[0]
    assert e.frames.shape == (16, 64, 64, 3) and e.actions.shape == (16, 1) and e.actions.dtype == np.float32
