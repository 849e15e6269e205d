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
                 window_frames: int, chunk_frames: int, sink_frames: int = 0, device="cpu", dtype=torch.float32):
        if window_frames < 0 or sink_frames < 0:
            raise ValueError("window_frames and sink_frames must be >= 0")
        self.N = tokens_per_frame
        self.window_frames = window_frames
        self.chunk_frames = chunk_frames
        self.sink_frames = sink_frames
        self.ring_frames = window_frames + chunk_frames
        self.cap_frames = sink_frames + self.ring_frames
        S = self.cap_frames * tokens_per_frame
        self.k = torch.zeros(num_layers, batch_size, num_heads, S, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        # absolute frame index held by each frame slot, -1 = empty
        self.slot_frame = torch.full((batch_size, self.cap_frames), -1, dtype=torch.long, device=device)
        # absolute index of the first frame of the next chunk, per env
        self.next_frame = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.batch_size = batch_size
        self.device = torch.device(device)

    # -- bookkeeping -------------------------------------------------------------------------
    def chunk_frame_index(self, num_frames: int | None = None) -> torch.Tensor:
        """(B, c) absolute frame indices of the chunk about to be processed."""
        c = self.chunk_frames if num_frames is None else num_frames
        return self.next_frame[:, None] + torch.arange(c, device=self.device)[None]

    def frame_slots(self, frames: torch.Tensor) -> torch.Tensor:
        ring = self.sink_frames + (frames - self.sink_frames) % self.ring_frames
        return torch.where(frames < self.sink_frames, frames, ring)

    def begin_chunk(self, num_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Claim the slots of the next chunk. Returns (frame positions (B, c), token slots (B, c*N),
        valid token mask (B, used)) for the attention of this chunk; slots at and above `used`
        (= valid.shape[1]) have never been written and are left out of the attention."""
        c = self.chunk_frames if num_frames is None else num_frames
        if c > self.chunk_frames:
            raise ValueError(f"num_frames={c} exceeds the cache's chunk_frames={self.chunk_frames}")
        frames = self.chunk_frame_index(c)  # (B, c)
        fslots = self.frame_slots(frames)  # (B, c)
        self.slot_frame.scatter_(1, fslots, frames)
        tok = (fslots[:, :, None] * self.N + torch.arange(self.N, device=self.device)).reshape(self.batch_size, -1)
        lo = self.next_frame[:, None] - self.window_frames
        sf = self.slot_frame
        valid_f = (sf >= 0) & ((sf >= lo) | (sf < self.sink_frames)) & (sf < (self.next_frame[:, None] + c))
        # slots fill upwards from 0 until the ring wraps, so nothing above `used` is ever valid:
        # attention can skip that tail (short rollouts then cost what their context costs)
        used = int(min(self.cap_frames, int(self.next_frame.max()) + c)) * self.N
        valid = valid_f.repeat_interleave(self.N, dim=1)[:, :used]  # (B, used)
        return frames, tok, valid

    def advance(self, num_frames: int | None = None) -> None:
        """The chunk's clean keys/values are written: move on to the next chunk."""
        self.next_frame += self.chunk_frames if num_frames is None else num_frames

    def reset(self, env_mask: torch.Tensor | None = None) -> None:
        """Empty the cache of the envs in `env_mask` (all when None)."""
        if env_mask is None:
            self.slot_frame.fill_(-1)
            self.next_frame.zero_()
        else:
            env_mask = env_mask.to(self.device)
            self.slot_frame[env_mask] = -1
            self.next_frame[env_mask] = 0

    def context_frames(self) -> torch.Tensor:
        """(B,) number of past latent frames the next chunk will attend to."""
        lo = self.next_frame[:, None] - self.window_frames
        sf = self.slot_frame
        return (((sf >= lo) | (sf < self.sink_frames)) & (sf >= 0) & (sf < self.next_frame[:, None])).sum(1)

    def memory_bytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2 + self.slot_frame.numel() * 8
