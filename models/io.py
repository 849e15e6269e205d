"""`save_pretrained` / `from_pretrained` as `config.json` + `model.safetensors` (diffusers style).

Writes are atomic at the directory level: a new directory is written next to the target and
swapped in with renames, so a process killed mid-write never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.config_utils import config_from_dict, config_to_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def resolve_device(device: str | torch.device | None, name: str = "device") -> torch.device:
    """`device` as a torch.device, checked: None means CUDA when available, else CPU. Asking for
    CUDA (or MPS) where this torch build or machine has none raises a ValueError naming `name`
    instead of torch's assertion deep inside the first `.to()`."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name}: {device!r} is not a torch device; pass 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {device!r} was asked for, but this torch build or machine has no CUDA "
                             f"(torch {torch.__version__}); pass {name}='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}: 'mps' is not available here; pass {name}='cpu'")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"{name}: unsupported device type {dev.type!r}; pass 'cpu' or 'cuda'")
    return dev


def atomic_write_dir(target: str | os.PathLike, write_fn) -> Path:
    """Call `write_fn(tmpdir)` then swap tmpdir into `target` (old copy kept until the swap ends)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_fn(tmp)
        old = target.parent / f".{target.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_dir(directory: str | os.PathLike) -> Path:
    """The directory, or its `.old` twin left by a write killed between the two renames."""
    directory = Path(directory)
    if directory.is_dir():
        return directory
    old = directory.parent / f".{directory.name}.old"
    if old.is_dir():
        return old
    raise FileNotFoundError(
        f"checkpoint directory {str(directory)!r} does not exist; pass a directory written by "
        "save_pretrained (config.json + model.safetensors)"
    )


def read_json(path: str | os.PathLike, who: str = "") -> Any:
    """Parse a checkpoint's JSON file; a corrupt one is a ValueError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{who}{path} is not valid JSON ({e}); the file is corrupt, re-save it") from e


class PretrainedMixin:
    """Mixin for nn.Modules whose constructor takes one config dataclass: `Model(cfg)`."""

    config_class: type

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None, storage_dtype: torch.dtype | None = None) -> Path:
        """`storage_dtype=torch.float16` halves the files (for shipping); loading casts back to
        the model's dtype (fp32 here: this CPU has no fast half/bf16 arithmetic)."""
        cfg = config_to_dict(self.config)
        payload = {"_class": type(self).__name__, **cfg}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if storage_dtype is not None:
            state = {k: (v.to(storage_dtype) if v.is_floating_point() else v) for k, v in state.items()}

        def write(tmp: Path):
            (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2))
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"class": type(self).__name__})
            if extra:
                (tmp / "extra.json").write_text(json.dumps(extra, indent=2))

        return atomic_write_dir(directory, write)

    @classmethod
    def load_config(cls, directory: str | os.PathLike):
        directory = resolve_dir(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: not a checkpoint directory written by save_pretrained")
        data = read_json(path)
        klass = data.pop("_class", cls.__name__)
        if klass != cls.__name__:
            raise ValueError(f"{path} holds a {klass} checkpoint, but {cls.__name__}.from_pretrained was called")
        return config_from_dict(cls.config_class, data, where=str(path))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides: Any):
        directory = resolve_dir(directory)
        cfg = cls.load_config(directory)
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise ValueError(f"from_pretrained: unknown config override {k!r} for {cls.__name__}")
            setattr(cfg, k, v)
        model = cls(cfg)
        load_weights_into(model, directory / WEIGHTS_NAME)
        return model.to(map_location)


def load_weights_into(model: torch.nn.Module, path: str | os.PathLike) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checkpoint has a config but no weights")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} could not be read as safetensors ({e}); the file is corrupt or truncated") from e
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match {type(model).__name__}: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}. Was it saved from a different config?"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(
                f"{path}: key {k!r} has shape {tuple(v.shape)} but the model built from config.json "
                f"expects {tuple(own[k].shape)}; config and weights disagree"
            )
    model.load_state_dict(state, strict=True)


class ScalarLogger:
    """Appends namespaced scalars (`losses/dmd`, `charts/steps_per_s`) as JSON lines, the one
    logger of every training loop: `{step_key: N, "time": seconds since t0, "losses/dmd": ...}`.
    A `__` in a keyword name stands for `/` (`charts__fps=...` logs `charts/fps`)."""

    def __init__(self, path: str | os.PathLike, step_key: str = "step", t0: float | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.step_key = step_key
        self.t0 = time.time() if t0 is None else t0

    def log(self, step: int, **scalars: float) -> None:
        rec = {self.step_key: int(step), "time": round(time.time() - self.t0, 3)}
        rec.update({k.replace("__", "/"): float(v) for k, v in scalars.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a `ScalarLogger` file ([] when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def json_safe(obj):
    """inf/nan -> strings so the JSON stays standard."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str | Path, obj) -> Path:
    """`obj` as indented standard JSON at `path` (its folder made), through `json_safe`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(obj), indent=2))
    return path
