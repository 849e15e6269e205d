"""Shared plumbing for every training stage: resumable checkpoints, namespaced logs, seeding.

A stage writes `<stage_dir>/state.pt` (model, optimiser, step, RNG) atomically every
`save_every` steps and on exit; re-running the stage resumes from it with nothing lost.
When the stage finishes it writes `<stage_dir>/DONE` and its final `save_pretrained` directory.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_training_state(stage_dir: str | os.PathLike, step: int, modules: dict, optimizers: dict, extra: dict | None = None) -> None:
    state = {
        "step": step,
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": rng_state(),
        "extra": extra or {},
    }
    atomic_torch_save(state, Path(stage_dir) / "state.pt")


def load_training_state(stage_dir: str | os.PathLike, modules: dict, optimizers: dict) -> tuple[int, dict]:
    """Restore in place; returns (step, extra). Step 0 and {} when there is nothing to resume."""
    path = Path(stage_dir) / "state.pt"
    if not path.is_file():
        return 0, {}
    state = torch.load(path, map_location="cpu", weights_only=False)
    for k, m in modules.items():
        m.load_state_dict(state["modules"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    set_rng_state(state["rng"])
    return int(state["step"]), state.get("extra", {})


def is_done(stage_dir: str | os.PathLike) -> bool:
    return (Path(stage_dir) / "DONE").is_file()


def mark_done(stage_dir: str | os.PathLike, summary: dict | None = None) -> None:
    p = Path(stage_dir)
    p.mkdir(parents=True, exist_ok=True)
    (p / "DONE").write_text(json.dumps(summary or {}, indent=2))
