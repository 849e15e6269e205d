"""How good a target is the physics-consistency loss's? On held-out real episodes (the base run's latents,
decoded by the shipped VAE and read by the shipped probe), each chunk's target (CartPole stepped through the
chunk's actions from the state fitted to the N probed frames before it, `distill.physics_consistency`) is
compared with the true states, beside the probe's own reading of the true chunk, repeating the last frame,
and a constant-velocity line through the same frames (no physics).

    python examples/physics_target_check.py --latents runs/base/latents.safetensors --split runs/base/split.json \
        --json docs/results/dream_physics/target_check.json
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from causvid_env.checkpoint import default_checkpoint_dir  # noqa: E402
from distill.dataset import LatentCache  # noqa: E402
from distill.physics_consistency import fit_last_state, physics_for_world, probe_readings, simulate  # noqa: E402
from evaluation.probe import load_probe  # noqa: E402
from models.io import write_json  # noqa: E402
from models.vae import CausalVAE  # noqa: E402

STD = np.array([0.809, 0.155])  # the data's standard deviation of cart x (m) and pole angle (rad)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latents", required=True, help="a latent cache (distill.dataset.LatentCache) with per-frame states")
    p.add_argument("--split", required=True, help="the run's split.json (its held-out episodes are used)")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--max-latents", type=int, default=60)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cache = LatentCache.load(a.latents)
    held = json.loads(Path(a.split).read_text())["heldout"][:a.episodes]
    ck = default_checkpoint_dir("cartpole")
    vae = CausalVAE.from_pretrained(ck / "vae").eval()
    probe, _ = load_probe(ck / "probe")
    table = physics_for_world("cartpole")
    errs: dict[str, list] = {}
    for e in held:
        z = torch.from_numpy(cache.latents[e][:a.max_latents])[None].permute(0, 2, 1, 3, 4).float()
        with torch.no_grad():
            R = probe_readings(vae, probe, z)[0].double().numpy()  # (T*F, 2) [cart m, pole rad]
        A, S, M = (cache.arrays[e][k] for k in ("actions", "states", "action_mask"))
        P = {k: torch.tensor([float(v)], dtype=torch.float64) for k, v in table[cache.strings[e]["prompt"]].items() if k != "tau"}
        for j in range(3, z.shape[2]):
            c0 = 4 * j
            if not M[c0 - 12:c0 + 4].all():
                continue
            acts = torch.from_numpy(A[c0:c0 + 4].astype(float))[None]
            truth = S[c0:c0 + 4][:, [0, 2]]
            for n in (4, 8, 12):
                pos = torch.from_numpy(R[c0 - n:c0])[None]
                s = fit_last_state(pos, torch.from_numpy(A[c0 - n + 1:c0].astype(float))[None], P)
                pred = simulate(s, acts, P)[0][:, [0, 2]].numpy()
                errs.setdefault(f"physics fit on {n} probed frames", []).append(np.abs(pred - truth) / STD)
            t = (np.arange(8) - 7) * 0.02
            coef = np.polyfit(t, R[c0 - 8:c0], 1)  # (2, 2): slope, intercept per target
            line = coef[1] + np.outer((np.arange(1, 5)) * 0.02, coef[0])
            errs.setdefault("constant-velocity line through 8 probed frames (no physics)", []).append(np.abs(line - truth) / STD)
            errs.setdefault("repeat the last probed frame", []).append(np.abs(np.repeat(R[c0 - 1:c0], 4, 0) - truth) / STD)
            errs.setdefault("the probe's reading of the true chunk", []).append(np.abs(R[c0:c0 + 4] - truth) / STD)
    res = {"kind": "physics_target_check", "units": "mean |estimate - true state| per frame of the chunk, in standard units "
           "(cart x 0.809 m, pole angle 0.155 rad)", "chunks": len(next(iter(errs.values()))),
           "episodes": len(held), "estimates": {}}
    for k, v in errs.items():
        m = np.mean(v, 0)
        res["estimates"][k] = {"pole_per_frame": [round(float(x), 3) for x in m[:, 1]], "cart_per_frame": [round(float(x), 3) for x in m[:, 0]]}
        print(f"{k}: pole {res['estimates'][k]['pole_per_frame']}, cart {res['estimates'][k]['cart_per_frame']}")
    res["command"] = "python examples/physics_target_check.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
