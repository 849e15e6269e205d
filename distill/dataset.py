"""Read collected episodes (see :mod:`distill.collect`) and cache their VAE latents.

    ds = EpisodeDataset("data/cartpole")            # verifies shard checksums
    train, heldout = ds.split(0.1, seed=0)           # by episode
    clip = train.sample_clips(8, np.random.default_rng(0))   # 8 frames, chunk-aligned

    build_latent_cache(train, encode_fn, "data/cartpole/latents_train.safetensors")
    clips = LatentClipDataset(LatentCache.load("data/cartpole/latents_train.safetensors"), num_latent=4)
    batch = clips.sample(32, np.random.default_rng(0))

Everything is numpy; converting to torch is the caller's business. A clip is a dict with
``frames`` (T,H,W,3) uint8 (or ``latents`` (T/F,C,h,w) float32), the per-frame arrays
``actions``, ``action_mask``, ``rewards``, ``terminated``, ``truncated``, ``states`` (length
T), and the strings ``prompt``, ``variant``, ``policy`` plus ``episode`` and ``start``.
Clips start on chunk boundaries (multiples of F), so a clip's first chunk is either the
episode's still chunk or a chunk produced by one held action.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

__all__ = [
    "Episode",
    "EpisodeDataset",
    "LatentCache",
    "LatentClipDataset",
    "build_latent_cache",
]

PER_FRAME = ("actions", "action_mask", "rewards", "terminated", "truncated", "states")
STRINGS = ("variant", "prompt", "policy")


@dataclass
class Episode:
    """One episode: per-frame arrays of equal length N (a multiple of F) and its strings."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    actions: np.ndarray  # (N, *action_shape)
    action_mask: np.ndarray  # (N,) bool
    rewards: np.ndarray  # (N,) float32
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    states: np.ndarray  # (N, state_dim) float32
    variant: str
    prompt: str
    policy: str
    shard: str = ""
    index: int = 0

    def __len__(self) -> int:
        return len(self.action_mask)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_clip_len(num_frames: int, F: int, arg: str = "num_frames") -> int:
    if int(num_frames) <= 0 or int(num_frames) % F:
        raise ValueError(f"{arg} must be a positive multiple of frames_per_chunk={F}, got {num_frames!r}")
    return int(num_frames)


def _clip_index(lengths: list[int], clip_len: int, stride: int) -> np.ndarray:
    """All (episode, start) pairs of clips of ``clip_len`` with start a multiple of ``stride``."""
    pairs = [(e, s) for e, n in enumerate(lengths) for s in range(0, n - clip_len + 1, stride)]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


class EpisodeDataset:
    """Episodes of a collection directory, loaded into memory.

    Args:
        path: directory with ``manifest.json`` and the shards.
        verify: check each shard's sha256 against the manifest.
        frames: False loads every per-frame array but the frames, which are left empty (N, 0)
            (statistics such as the data card's coverage need no pixels).

    A shard that is missing, truncated, corrupt or fails its checksum is skipped with a
    warning naming it; if no shard loads, ``ValueError`` is raised.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True, frames: bool = True) -> None:
        path = os.fspath(path)
        manifest_path = os.path.join(path, "manifest.json")
        if not os.path.exists(manifest_path):
            raise ValueError(f"path {path!r} has no manifest.json; run `python -m distill.collect --out {path}` first")
        with open(manifest_path) as f:
            self.manifest: dict[str, Any] = json.load(f)
        self.path = path
        self.bad_shards: list[str] = []
        episodes: list[Episode] = []
        for s in self.manifest["shards"]:
            shard_path = os.path.join(path, s["file"])
            try:
                if not os.path.exists(shard_path):
                    raise FileNotFoundError("file is missing")
                if verify and sha256_file(shard_path) != s["sha256"]:
                    raise ValueError("sha256 does not match the manifest (truncated or modified)")
                loaded = self._load_shard(shard_path, s["file"], s["episodes"], frames)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
                warnings.warn(f"skipping shard {s['file']} in {path}: {e}; re-run distill.collect to repair it",
                              stacklevel=2)
                self.bad_shards.append(s["file"])
                continue
            episodes.extend(loaded)
        if not episodes:
            raise ValueError(f"path {path!r}: no shard could be loaded (bad shards: {self.bad_shards})")
        self._init(episodes)

    @staticmethod
    def _load_shard(path: str, name: str, count: int, frames: bool = True) -> list[Episode]:
        out = []
        with np.load(path, allow_pickle=False) as z:  # members are read one by one, only when asked for
            for j in range(count):
                arrays = {k: z[f"{j:03d}/{k}"] for k in PER_FRAME}
                n = len(arrays["states"])
                arrays["frames"] = z[f"{j:03d}/frames"] if frames else np.zeros((n, 0), np.uint8)
                strings = {k: str(z[f"{j:03d}/{k}"]) for k in STRINGS}
                if any(len(a) != n for a in arrays.values()):
                    raise ValueError(f"episode {j} has per-frame arrays of different lengths")
                out.append(Episode(**arrays, **strings, shard=name, index=j))
        return out

    def _init(self, episodes: list[Episode]) -> None:
        self.episodes = episodes
        self.frames_per_chunk = int(self.manifest["frames_per_chunk"])
        self.fps = int(self.manifest["fps"])
        self.world = self.manifest["world"]

    @classmethod
    def from_episodes(cls, episodes: list[Episode], manifest: dict[str, Any], path: str = "") -> EpisodeDataset:
        """A dataset over an explicit list of episodes (used by :meth:`split`)."""
        self = cls.__new__(cls)
        self.manifest, self.path, self.bad_shards = manifest, path, []
        self._init(list(episodes))
        return self

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    @property
    def total_frames(self) -> int:
        return sum(len(e) for e in self.episodes)

    @property
    def prompts(self) -> list[str]:
        """The distinct prompts, sorted."""
        return sorted({e.prompt for e in self.episodes})

    # ------------------------------------------------------------------ splits and clips
    def split(self, held_out_fraction: float, seed: int = 0) -> tuple[EpisodeDataset, EpisodeDataset]:
        """Split by episode into (train, held-out); at least one episode on each side."""
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction!r}")
        if len(self) < 2:
            raise ValueError("split needs at least 2 episodes")
        order = np.random.default_rng(seed).permutation(len(self))
        n_held = min(max(1, round(held_out_fraction * len(self))), len(self) - 1)
        held, train = sorted(order[:n_held]), sorted(order[n_held:])
        return (EpisodeDataset.from_episodes([self.episodes[i] for i in train], self.manifest, self.path),
                EpisodeDataset.from_episodes([self.episodes[i] for i in held], self.manifest, self.path))

    def clip(self, episode: int, start: int, num_frames: int) -> dict[str, Any]:
        """Frames ``[start, start + num_frames)`` of episode ``episode`` with its per-frame arrays."""
        e = self.episodes[episode]
        sl = slice(start, start + num_frames)
        return {"frames": e.frames[sl], **{k: getattr(e, k)[sl] for k in PER_FRAME},
                "prompt": e.prompt, "variant": e.variant, "policy": e.policy,
                "episode": episode, "start": start}

    def clip_index(self, num_frames: int, stride: int | None = None) -> np.ndarray:
        """(num_clips, 2) array of (episode, start) for every chunk-aligned clip."""
        F = self.frames_per_chunk
        num_frames = _check_clip_len(num_frames, F)
        stride = _check_clip_len(stride or F, F, "stride")
        return _clip_index([len(e) for e in self.episodes], num_frames, stride)

    def sample_clips(self, num_frames: int, rng: np.random.Generator, batch_size: int | None = None):
        """One random chunk-aligned clip (uniform over all clips), or a stacked batch of them."""
        index = self.clip_index(num_frames)
        if len(index) == 0:
            raise ValueError(f"num_frames={num_frames} is longer than every episode")
        picks = rng.integers(len(index), size=1 if batch_size is None else batch_size)
        clips = [self.clip(int(e), int(s), num_frames) for e, s in index[picks]]
        return clips[0] if batch_size is None else _stack(clips)

    def iter_clips(self, num_frames: int, stride: int | None = None, shuffle: bool = False,
                   rng: np.random.Generator | None = None) -> Iterator[dict[str, Any]]:
        """Every chunk-aligned clip (starts every ``stride`` frames, default F), optionally shuffled."""
        index = self.clip_index(num_frames, stride)
        if shuffle:
            index = index[(rng or np.random.default_rng()).permutation(len(index))]
        for e, s in index:
            yield self.clip(int(e), int(s), num_frames)


def _stack(clips: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: (np.stack([c[k] for c in clips]) if isinstance(clips[0][k], np.ndarray)
                else [c[k] for c in clips]) for k in clips[0]}


# ----------------------------------------------------------------------------- latents


@dataclass
class LatentCache:
    """Per-episode latents (T/F, C, h, w) float32 plus the per-frame arrays and strings."""

    latents: list[np.ndarray]
    arrays: list[dict[str, np.ndarray]]  # per episode: PER_FRAME name -> (T, ...)
    strings: list[dict[str, str]]  # per episode: variant, prompt, policy
    frames_per_latent: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.latents)

    def save(self, path: str | os.PathLike) -> None:
        """Save as one safetensors file: concatenated arrays + offsets, strings in the metadata."""
        from safetensors.numpy import save_file

        path = os.fspath(path)
        lat_off = np.cumsum([0] + [len(x) for x in self.latents]).astype(np.int64)
        frame_off = np.cumsum([0] + [len(a["action_mask"]) for a in self.arrays]).astype(np.int64)
        # safetensors writes raw buffers: every array must be C-contiguous.
        tensors = {"latents": np.ascontiguousarray(np.concatenate(self.latents), dtype=np.float32),
                   "latent_offsets": lat_off, "frame_offsets": frame_off}
        for k in PER_FRAME:
            tensors[k] = np.ascontiguousarray(np.concatenate([a[k] for a in self.arrays]))
        metadata = {"format": "causvid-latents/1", "frames_per_latent": str(self.frames_per_latent),
                    "strings": json.dumps(self.strings), "meta": json.dumps(self.meta)}
        tmp = f"{path}.tmp{os.getpid()}"
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentCache:
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"path {path!r} does not exist; build it with build_latent_cache()")
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != "causvid-latents/1":
            raise ValueError(f"path {path!r} is not a latent cache (format {metadata.get('format')!r})")
        t = load_file(path)
        lo, fo = t["latent_offsets"], t["frame_offsets"]
        n = len(lo) - 1
        latents = [t["latents"][lo[i]:lo[i + 1]] for i in range(n)]
        arrays = [{k: t[k][fo[i]:fo[i + 1]] for k in PER_FRAME} for i in range(n)]
        return cls(latents, arrays, json.loads(metadata["strings"]), int(metadata["frames_per_latent"]),
                   json.loads(metadata.get("meta", "{}")))


def build_latent_cache(
    dataset: EpisodeDataset,
    encode_fn: Callable[[np.ndarray], np.ndarray],
    path: str | os.PathLike | None = None,
    batch_frames: int | None = None,
    progress: bool = False,
) -> LatentCache:
    """Encode every episode with ``encode_fn`` and (optionally) save the cache to ``path``.

    ``encode_fn(frames)`` takes (T, H, W, 3) uint8 with T a multiple of F and returns
    (T // F, C, h, w) float32. By default it is called once per whole episode (right
    for a causal video VAE whose state spans the episode). With ``batch_frames`` the
    episode is encoded in pieces of that many frames (a multiple of F) - only valid if
    the encoder treats chunks independently.
    """
    F = dataset.frames_per_chunk
    if batch_frames is not None:
        batch_frames = _check_clip_len(batch_frames, F, "batch_frames")
    from tqdm import tqdm

    latents, arrays, strings = [], [], []
    for e in tqdm(dataset.episodes, desc="encode", unit="ep", disable=not progress):
        step = batch_frames or len(e)
        parts = [np.asarray(encode_fn(e.frames[s:s + step]), dtype=np.float32) for s in range(0, len(e), step)]
        z = np.concatenate(parts)
        if z.ndim != 4 or len(z) != len(e) // F:
            raise ValueError(
                f"encode_fn must return (T // {F}, C, h, w) for T={len(e)} frames, got shape {z.shape}"
            )
        latents.append(z)
        arrays.append({k: getattr(e, k) for k in PER_FRAME})
        strings.append({k: getattr(e, k) for k in STRINGS})
    meta = {"world": dataset.world, "fps": dataset.fps, "frames_per_chunk": F,
            "source": dataset.path, "episodes": [[e.shard, e.index] for e in dataset.episodes]}
    cache = LatentCache(latents, arrays, strings, F, meta)
    if path is not None:
        cache.save(path)
    return cache


class LatentClipDataset:
    """Fixed-length latent clips of ``num_latent`` latent frames, every latent position.

    Item ``i`` is a dict: ``latents`` (num_latent, C, h, w) float32, per-frame arrays of
    length ``num_latent * F`` (``actions``, ``action_mask``, ``rewards``, ``terminated``,
    ``truncated``, ``states``), and ``prompt``, ``variant``, ``policy``, ``episode``, ``start``
    (start in latent frames). ``episodes`` restricts it to a subset of episode indices.
    """

    def __init__(self, cache: LatentCache | str | os.PathLike, num_latent: int,
                 episodes: list[int] | None = None) -> None:
        self.cache = cache if isinstance(cache, LatentCache) else LatentCache.load(cache)
        if int(num_latent) <= 0:
            raise ValueError(f"num_latent must be a positive integer, got {num_latent!r}")
        self.num_latent = int(num_latent)
        self.F = self.cache.frames_per_latent
        ids = list(range(len(self.cache))) if episodes is None else list(episodes)
        lengths = [len(self.cache.latents[i]) for i in ids]
        local = _clip_index(lengths, self.num_latent, 1)
        self.index = np.stack([np.asarray(ids, np.int64)[local[:, 0]], local[:, 1]], 1) if len(local) else local
        if len(self.index) == 0:
            raise ValueError(f"num_latent={num_latent} is longer than every episode in the cache")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, s = (int(v) for v in self.index[i])
        fs = slice(s * self.F, (s + self.num_latent) * self.F)
        return {"latents": self.cache.latents[e][s:s + self.num_latent],
                **{k: v[fs] for k, v in self.cache.arrays[e].items()},
                **self.cache.strings[e], "episode": e, "start": s}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """A stacked batch of uniformly drawn clips."""
        return _stack([self[int(i)] for i in rng.integers(len(self), size=batch_size)])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]
