"""examples/physics_target_check.py on a tiny latent cache of one real episode: every estimate is reported,
and on real latents the physics target beats repeating the last frame."""
import json

import numpy as np
import torch

from causvid_env.checkpoint import default_checkpoint_dir
from causvid_env.worlds import get_world
from distill.collect import rollout_episode
from distill.dataset import LatentCache
from models.vae import CausalVAE
from tests.test_evaluation import load_example


def test_the_physics_target_is_nearer_the_truth_than_repeating(tmp_path):
    spec = get_world("cartpole")
    ep = None
    for i in range(50):  # an episode long enough for a few chunks after 12 acted frames
        ep = rollout_episode(spec, seed=3, shard=0, index=i, max_frames=200)
        if len(ep["frames"]) >= 96:
            break
    n = len(ep["frames"]) // 4 * 4
    vae = CausalVAE.from_pretrained(default_checkpoint_dir("cartpole") / "vae").eval()
    with torch.no_grad():
        x = torch.from_numpy(ep["frames"][:n]).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1)
        z = vae.encode(x)[0].transpose(0, 1).numpy()  # (T', C, h, w)
    arrays = {k: np.asarray(ep[k])[:n] for k in ("actions", "action_mask", "rewards", "terminated", "truncated", "states")}
    cache = LatentCache([z], [arrays], [{"variant": str(ep["variant"]), "prompt": str(ep["prompt"]), "policy": str(ep["policy"])}], 4)
    cache.save(tmp_path / "latents.safetensors")
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "heldout": [0]}))
    mod = load_example("physics_target_check")
    res = mod.main(["--latents", str(tmp_path / "latents.safetensors"), "--split", str(tmp_path / "split.json"),
                    "--json", str(tmp_path / "check.json")])
    est = res["estimates"]
    assert res["chunks"] > 5 and json.loads((tmp_path / "check.json").read_text())["command"].startswith("python examples/")
    fit, repeat = np.mean(est["physics fit on 8 probed frames"]["pole_per_frame"]), np.mean(est["repeat the last probed frame"]["pole_per_frame"])
    assert fit < repeat, (fit, repeat)
