"""Preallocated sliding-window KV cache for chunk-by-chunk inference.

Layout: keys/values per layer in one buffer (layers, B, heads, slots, head_dim). Slots are
grouped by latent frame: `sink_frames` fixed slots for the attention sink (the first frames of the
episode, never evicted), then a ring of `window_frames + chunk_frames` frames. Frame g >= sink
lives in ring slot (g - sink) mod ring: the chunk being generated overwrites exactly the frames
that just left the window, so nothing is copied or concatenated and memory is flat forever.

Keys are stored already rotated (RoPE at their absolute frame index, angles computed in float64).
RoPE attention scores depend only on the difference of positions, so the order of slots does not
matter and the positions the model effectively sees stay within the window length however long
the rollout: that is how positions are kept inside the trained range when the window slides.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, *, num_layers: int, batch_size: int, num_heads: int, head_dim: int, tokens_per_frame: int,
                 window_frames: int, chunk_frames: int, sink_frames: int = 0, device="cpu", dtype=torch.float32,
                 fused_writes: bool = False):
        """`fused_writes`: room for one more chunk in the ring, so that a finished chunk's
        cache-writing pass can share a pass with the next chunk's first denoising step
        (`begin_fused`): the two need windows that overlap all but one chunk."""
        if window_frames < 0 or sink_frames < 0:
            raise ValueError("window_frames and sink_frames must be >= 0")
        self.N = tokens_per_frame
        self.window_frames = window_frames
        self.chunk_frames = chunk_frames
        self.sink_frames = sink_frames
        self.fused_writes = fused_writes
        self.ring_frames = window_frames + chunk_frames * (2 if fused_writes else 1)
        self.cap_frames = sink_frames + self.ring_frames
        S = self.cap_frames * tokens_per_frame
        self.k = torch.zeros(num_layers, batch_size, num_heads, S, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        # absolute frame index held by each frame slot, -1 = empty
        # the bookkeeping lives on the host whatever the buffers' device: reading it (how many slots are
        # in use, whether every slot is valid, where a chunk goes) never waits for the GPU
        self.slot_frame = torch.full((batch_size, self.cap_frames), -1, dtype=torch.long)
        # absolute index of the first frame of the next chunk, per env
        self.next_frame = torch.zeros(batch_size, dtype=torch.long)
        self.batch_size = batch_size
        self.device = torch.device(device)
        # training only: per layer, (keys, values) buffers that carry the graph of the writes (`DiT.forward_chunk(keep_grad=True)`)
        self.grad_kv: list | None = None

    # -- bookkeeping -------------------------------------------------------------------------
    def chunk_frame_index(self, num_frames: int | None = None) -> torch.Tensor:
        """(B, c) absolute frame indices of the chunk about to be processed."""
        c = self.chunk_frames if num_frames is None else num_frames
        return self.next_frame[:, None] + torch.arange(c)[None]

    def frame_slots(self, frames: torch.Tensor) -> torch.Tensor:
        ring = self.sink_frames + (frames - self.sink_frames) % self.ring_frames
        return torch.where(frames < self.sink_frames, frames, ring)

    def begin_chunk(self, num_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Claim the slots of the next chunk. Returns (frame positions (B, c), token slots (B, c*N),
        valid token mask (B, used)) for the attention of this chunk; slots at and above `used`
        (= valid.shape[1]) have never been written and are left out of the attention. All three are
        host tensors (the caller moves what it needs to the buffers' device, once per chunk)."""
        c = self.chunk_frames if num_frames is None else num_frames
        if c > self.chunk_frames:
            raise ValueError(f"num_frames={c} exceeds the cache's chunk_frames={self.chunk_frames}")
        frames, tok, used = self._claim(c)
        lo = self.next_frame[:, None] - self.window_frames
        sf = self.slot_frame
        valid_f = (sf >= 0) & ((sf >= lo) | (sf < self.sink_frames)) & (sf < (self.next_frame[:, None] + c))
        valid = valid_f.repeat_interleave(self.N, dim=1)[:, :used]  # (B, used)
        return frames, tok, valid

    def _claim(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Mark the slots of the next `num_frames` frames as theirs. Returns (frame positions
        (B, num_frames), token slots (B, num_frames*N), used): slots fill upwards from 0 until the
        ring wraps, so nothing at or above `used` is ever valid and attention can skip that tail
        (short rollouts then cost what their context costs)."""
        frames = self.chunk_frame_index(num_frames)  # (B, num_frames)
        fslots = self.frame_slots(frames)
        self.slot_frame.scatter_(1, fslots, frames)
        tok = (fslots[:, :, None] * self.N + torch.arange(self.N)).reshape(self.batch_size, -1)
        used = int(min(self.cap_frames, int(self.next_frame.max()) + num_frames)) * self.N
        return frames, tok, used

    def begin_fused(self, pending: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Claim the slots of two chunks for one pass: a finished chunk whose keys/values are written
        now (at `next_frame`), then the next chunk's first denoising step. `pending` (B,) bool: envs
        that have a finished chunk; for the others (their episode starts with this chunk) the first
        chunk is a placeholder that no query of the second sees and that `finish_fused` discards.

        Returns (frame positions (B, 2c), token slots (B, 2c*N), valid (B, 2, used)): row 0 masks
        the finished chunk's attention (its window and itself), row 1 the new chunk's (its window,
        which ends with the finished chunk, and itself)."""
        if not self.fused_writes:
            raise ValueError("begin_fused needs a cache made with fused_writes=True (room for two chunks)")
        c, N = self.chunk_frames, self.N
        frames, tok, used = self._claim(2 * c)
        sf, nxt = self.slot_frame, self.next_frame[:, None]
        live = (sf >= 0) & (sf < nxt + 2 * c)
        sink = sf < self.sink_frames
        first = (sf >= nxt) & (sf < nxt + c)  # the finished chunk (or the placeholder)
        valid_a = live & ((sf >= nxt - self.window_frames) | sink) & (sf < nxt + c)
        valid_b = live & ((sf >= nxt + c - self.window_frames) | sink) & ~(first & ~pending.cpu()[:, None])
        valid = torch.stack([valid_a, valid_b], 1).repeat_interleave(N, dim=2)[:, :, :used]  # (B, 2, used)
        return frames, tok, valid

    def finish_fused(self, pending: torch.Tensor) -> None:
        """After the pass of `begin_fused`: the finished chunks are kept (their envs move on by one
        chunk); placeholders are dropped and the new chunks' scratch slots released, so the next
        chunk begins where the placeholder was."""
        c = self.chunk_frames
        pending = pending.cpu()
        frames = self.chunk_frame_index(2 * c)
        drop = torch.where(pending[:, None], frames[:, c:].repeat(1, 2), frames)  # the new chunk / placeholder and new chunk
        slots = self.frame_slots(drop)
        self.slot_frame.scatter_(1, slots, torch.full_like(slots, -1))
        self.next_frame += pending.long() * c

    def advance(self, num_frames: int | None = None) -> None:
        """The chunk's clean keys/values are written: move on to the next chunk."""
        self.next_frame += self.chunk_frames if num_frames is None else num_frames

    def reset(self, env_mask: torch.Tensor | None = None) -> None:
        """Empty the cache of the envs in `env_mask` (all when None)."""
        self.grad_kv = None
        if env_mask is None:
            self.slot_frame.fill_(-1)
            self.next_frame.zero_()
        else:
            env_mask = env_mask.cpu()
            self.slot_frame[env_mask] = -1
            self.next_frame[env_mask] = 0

    def context_frames(self, pending_frames: torch.Tensor | int = 0) -> torch.Tensor:
        """(B,) number of past latent frames the next chunk will attend to; `pending_frames` (per env
        or one int): finished frames whose keys/values are not written yet (see `begin_fused`)."""
        pending = torch.as_tensor(pending_frames).cpu()
        lo = self.next_frame[:, None] + pending.reshape(-1, 1) - self.window_frames
        sf = self.slot_frame
        return (((sf >= lo) | (sf < self.sink_frames)) & (sf >= 0) & (sf < self.next_frame[:, None])).sum(1) + pending

    def memory_bytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2 + self.slot_frame.numel() * 8
