"""Devices: asking for an accelerator that is absent fails early with an error naming the argument."""
import pytest
import torch

from models.io import resolve_device

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is absent")


def test_resolve_device_defaults_and_checks():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device: 'gpu' is not a torch device"):
        resolve_device("gpu")


@needs_no_cuda
def test_cuda_without_cuda_names_the_argument(tiny_ckpt):
    from causvid_env.env import CausVidEnv
    from causvid_env.vector_env import CausVidVectorEnv
    from distill.pipeline import main

    with pytest.raises(ValueError, match="device: 'cuda' was asked for.*pass device='cpu'"):
        CausVidEnv(checkpoint=tiny_ckpt, device="cuda")
    with pytest.raises(ValueError, match="device: 'cuda' was asked for"):
        CausVidVectorEnv(2, checkpoint=tiny_ckpt, device="cuda")
    with pytest.raises(ValueError, match="--device: 'cuda' was asked for"):
        main(["--out", "/nonexistent/never-written", "--preset", "tiny", "--device", "cuda"])
