"""The one loop of every training stage (`StageRunner`) and its plumbing: resumable checkpoints,
seeding, the done marker.

A stage file keeps only its config, its models and its loss step; the runner owns the rest:

    runner = StageRunner(stage_dir, "teacher", cfg, accelerator)     # device, seeding
    if runner.done: return {}
    model, opt = ..., ...                                              # built after seeding
    runner.resume({"model": model}, {"opt": opt})                      # state.pt -> modules, optimisers, RNG
    model, opt = runner.prepare(model, opt)                            # accelerate wrappers
    runner.run(lambda step, rng: ...one optimiser step... -> (scalars, postfix))
    return runner.finish({"steps": runner.step}, lambda: model.save_pretrained(stage_dir / "model"))

It writes `<stage_dir>/state.pt` (modules, optimisers, step, RNG) atomically every `save_every`
steps and at the last one, logs the step's scalars as JSON lines (`models.io.ScalarLogger`) every
`log_every` steps and at the last one, and on completion writes the stage's final files and
`<stage_dir>/DONE`; re-running the stage resumes from state.pt with nothing lost.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from models.io import ScalarLogger, resolve_device


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


def load_training_state(stage_dir: str | os.PathLike, modules: dict, optimizers: dict,
                        optional: tuple = ()) -> tuple[int, dict]:
    """Restore in place; returns (step, extra). Step 0 and {} when there is nothing to resume.
    A module named in `optional` that state.pt lacks (it was added to the stage after that state
    was saved, e.g. a generator EMA) is left as it is and listed in extra["missing_modules"]."""
    path = Path(stage_dir) / "state.pt"
    if not path.is_file():
        return 0, {}
    state = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in modules if k not in state["modules"]]
    if set(missing) - set(optional):
        raise ValueError(f"{path} holds no state for {sorted(set(missing) - set(optional))}: it was saved by a different "
                         "stage; move it away to start the stage afresh")
    for k, m in modules.items():
        if k in missing:
            continue
        m.load_state_dict(state["modules"][k])
    extra = dict(state.get("extra") or {})
    for k, o in optimizers.items():
        if k in state["optimizers"]:
            o.load_state_dict(state["optimizers"][k])
        elif not extra.get("optimizers_dropped"):
            raise ValueError(f"{path} holds no state for the optimiser {k!r}: it was saved by a different stage; move it away "
                             "to start the stage afresh")
    set_rng_state(state["rng"])
    if missing:
        extra["missing_modules"] = missing
    return int(state["step"]), extra


def pack_training_state(state_path: str | os.PathLike, out_path: str | os.PathLike, half: bool = False, drop: tuple = ()) -> dict:
    """A stage's state.pt without its optimisers' moments, to keep in git between sessions (a DMD
    state: generator, fake score and EMA in fp32, about 40% of the file). Copied back as a stage's
    state.pt it resumes at its step with fresh optimisers (at the configured rates); with Adam at
    beta1 = 0, as DMD runs, that loses only the second moments. `half`: the modules' floating-point
    tensors in fp16 (loaded back into the fp32 modules); `drop`: modules left out, which the stage
    must list as optional (DMD's `generator_ema` restarts at the generator). -> {"step", "modules", "bytes"}."""
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    unknown = set(drop) - set(state["modules"])
    if unknown:
        raise ValueError(f"drop: {sorted(unknown)} not in {state_path} (it holds {sorted(state['modules'])})")
    state["modules"] = {k: ({n: (v.half() if half and v.is_floating_point() else v) for n, v in sd.items()})
                        for k, sd in state["modules"].items() if k not in drop}
    state["optimizers"] = {}
    state["extra"] = dict(state.get("extra") or {}) | {"optimizers_dropped": True}
    atomic_torch_save(state, Path(out_path))
    return {"step": int(state["step"]), "modules": sorted(state["modules"]), "bytes": Path(out_path).stat().st_size}


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers are copied)."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


SNAPSHOT_KINDS = ("model_step", "raw_step")


def snapshot_dirs(stage_dir: str | os.PathLike, kind: str = "model_step") -> list[tuple[int, Path]]:
    """(step, directory) of a stage's weight snapshots `model_stepN/` (`snapshot_every`), by step.
    `kind="raw_step"`: DMD's raw generator snapshots `raw_stepN/` (model_stepN/ holds its EMA when it keeps one)."""
    if kind not in SNAPSHOT_KINDS:
        raise ValueError(f"kind: expected one of {SNAPSHOT_KINDS}, got {kind!r}")
    found = []
    for p in Path(stage_dir).glob(f"{kind}*"):
        n = p.name.removeprefix(kind)
        if n.isdigit() and (p / "config.json").is_file():
            found.append((int(n), p))
    return sorted(found)


def is_done(stage_dir: str | os.PathLike) -> bool:
    return (Path(stage_dir) / "DONE").is_file()


def mark_done(stage_dir: str | os.PathLike, summary: dict | None = None) -> None:
    p = Path(stage_dir)
    p.mkdir(parents=True, exist_ok=True)
    (p / "DONE").write_text(json.dumps(summary or {}, indent=2))


StepFn = Callable[[int, np.random.Generator], tuple[dict, dict]]


class StageRunner:
    """Owns a training stage's loop: device and processes, seeding, resume, the per-step RNG
    stream, tqdm, JSON-lines logging, checkpoints and the done marker.

    `cfg` supplies `steps`, `seed`, `save_every` and `log_every`, and may supply `max_seconds`: a
    wall-clock budget for this call of `run` (0: none); when it is spent the stage saves and ends at
    the step it reached, and `finish` marks it done (a lent GPU's or a session's minutes, not steps). With `distributed=True` the stage
    runs through `accelerate` (the given accelerator, or a fresh one on CUDA when available):
    every process seeds with `seed + process_index` and draws its own stream; only the main
    process logs and writes. With `distributed=False` the stage runs in this process on `device`.

    The RNG a step receives is a fresh `default_rng([seed, (process_index,) step])`, so a resumed
    run draws exactly what an uninterrupted one would; `persistent_rng=True` instead hands every
    step one generator seeded with `seed` whose state is saved in state.pt (`extra["data_rng"]`).
    Global RNGs (python, numpy, torch) are saved and restored with the checkpoint too.
    """

    def __init__(self, stage_dir: str | os.PathLike, name: str, cfg, accelerator=None, *, distributed: bool = True,
                 device: str | torch.device = "cpu", persistent_rng: bool = False):
        self.stage_dir, self.name, self.cfg = Path(stage_dir), name, cfg
        self.done = is_done(self.stage_dir)
        self.step, self.modules, self.optimizers = 0, {}, {}
        self.missing_modules: list = []
        self.stopped_early = False  # `run` ended on the wall-clock budget (cfg.max_seconds) before cfg.steps
        self.persistent_rng = persistent_rng
        self.acc = None
        if self.done:
            return
        if distributed:
            from accelerate import Accelerator  # heavy; only stages that train need it
            self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.process_index = self.acc.process_index if self.acc is not None else 0
        self.is_main = self.acc.is_main_process if self.acc is not None else True
        self.device = self.acc.device if self.acc is not None else resolve_device(device)
        self.stream_key = [cfg.seed, self.process_index] if self.acc is not None else [cfg.seed]
        seed_everything(cfg.seed + self.process_index)
        self.data_rng = np.random.default_rng(cfg.seed) if persistent_rng else None

    def resume(self, modules: dict, optimizers: dict, optional: tuple = ()) -> int:
        """Register what state.pt holds (unwrapped modules, optimisers) and restore it if present.
        `optional`: modules an older state.pt may lack; those it lacked are in `self.missing_modules`."""
        self.modules, self.optimizers = modules, optimizers
        self.step, extra = load_training_state(self.stage_dir, modules, optimizers, optional)
        self.missing_modules = list(extra.pop("missing_modules", []))
        if self.persistent_rng and "data_rng" in extra:
            self.data_rng.bit_generator.state = extra["data_rng"]
        return self.step

    def prepare(self, *objs):
        """`accelerator.prepare` (DDP wrappers, device placement); the objects themselves without one."""
        if self.acc is not None:
            return self.acc.prepare(*objs)
        return objs[0] if len(objs) == 1 else objs

    def unwrap(self, model):
        return self.acc.unwrap_model(model) if self.acc is not None else model

    def backward(self, loss: torch.Tensor) -> None:
        if self.acc is not None:
            self.acc.backward(loss)
        else:
            loss.backward()

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        if self.acc is not None:
            return self.acc.clip_grad_norm_(params, max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def barrier(self) -> None:
        if self.acc is not None:
            self.acc.wait_for_everyone()

    def save(self) -> None:
        extra = {"data_rng": self.data_rng.bit_generator.state} if self.persistent_rng else None
        save_training_state(self.stage_dir, self.step, self.modules, self.optimizers, extra)

    def run(self, train_step: StepFn) -> int:
        """Call `train_step(step, rng) -> (scalars to log, tqdm postfix)` until `cfg.steps`; returns the step.
        Scalars may be floats or 0-d tensors (read only when a record is written)."""
        cfg = self.cfg
        log = ScalarLogger(self.stage_dir / "log.jsonl")
        t_last, step_last = time.time(), self.step
        budget = float(getattr(cfg, "max_seconds", 0.0) or 0.0)
        t_start = time.time()
        with tqdm(total=cfg.steps, initial=self.step, desc=self.name, disable=not self.is_main, dynamic_ncols=True) as bar:
            while self.step < cfg.steps:
                if budget > 0 and self._out_of_time(t_start, budget):
                    self.stopped_early = True
                    if self.is_main:
                        self.save()
                        tqdm.write(f"{self.name}: wall-clock budget of {budget:.0f} s spent at step {self.step} of {cfg.steps}")
                    break
                rng = self.data_rng if self.persistent_rng else np.random.default_rng([*self.stream_key, self.step])
                scalars, postfix = train_step(self.step, rng)
                self.step += 1
                bar.update(1)
                bar.set_postfix(**postfix)
                last = self.step == cfg.steps
                if self.is_main and (self.step % cfg.log_every == 0 or last):
                    now = time.time()
                    log.log(self.step, **scalars, **{"charts/steps_per_s": (self.step - step_last) / max(now - t_last, 1e-9)})
                    t_last, step_last = now, self.step
                if self.is_main and (self.step % cfg.save_every == 0 or last):
                    self.save()
        return self.step

    def _out_of_time(self, t_start: float, budget: float) -> bool:
        """Whether `budget` seconds have passed since this call of `run` began; under several
        processes the main process decides and every process follows (they stop at the same step)."""
        stop = time.time() - t_start > budget
        if self.acc is not None and self.acc.num_processes > 1:
            import torch.distributed as dist
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            dist.broadcast(flag, src=0)
            stop = bool(flag.item() > 0)
        return stop

    def finish(self, summary: dict, save_final: Callable[[], None] | None = None) -> dict:
        """After `run`: the main process writes the stage's final files (`save_final()`) and DONE."""
        self.barrier()
        if self.is_main:
            if save_final is not None:
                save_final()
            mark_done(self.stage_dir, summary)
        self.barrier()
        return summary
