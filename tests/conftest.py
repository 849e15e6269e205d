import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)  # the machine has 2 cores; leave one for a training job

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from tests.helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_latents(tmp_path_factory):
    """Latents (a tiny random VAE's) of 4 short collected cartpole episodes, with their states."""
    from distill.collect import CollectConfig, collect
    from distill.dataset import EpisodeDataset, build_latent_cache
    from distill.pipeline import vae_encode_fn
    from models.vae import CausalVAE, VAEConfig
    from tests.helpers import TINY_VAE

    out = tmp_path_factory.mktemp("data")
    collect(CollectConfig(world="cartpole", out=str(out), episodes=4, workers=1, seed=5, max_frames=96, episodes_per_shard=4))
    eps = EpisodeDataset(out)
    torch.manual_seed(0)
    vae = CausalVAE(VAEConfig(frame_height=64, frame_width=96, temporal_down=4, **TINY_VAE)).eval()
    return build_latent_cache(eps, vae_encode_fn(vae))
