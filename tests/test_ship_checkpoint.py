"""Shipping a trained checkpoint into the package."""
import torch


def test_shipping_a_checkpoint_keeps_the_packages_policy_and_probe_and_brings_the_teacher(tmp_path, monkeypatch):
    """ship_checkpoint replaces the world model (fp16) but not what was trained against it."""
    import causvid_env.checkpoint as ck
    from models.dit import DiT
    from tests.helpers import tiny_checkpoint

    source = tiny_checkpoint(tmp_path / "run" / "checkpoint", seed=1)
    DiT.from_pretrained(source / "student").save_pretrained(source / "teacher")
    package = tiny_checkpoint(tmp_path / "package", seed=2)
    for name in ("policy", "probe"):
        (package / name).mkdir()
        (package / name / "weights.txt").write_text(name)
    monkeypatch.setattr(ck, "default_checkpoint_dir", lambda world="cartpole": package)
    ck.ship_checkpoint(source, info={"version": "test"})
    assert (package / "policy" / "weights.txt").read_text() == "policy" and (package / "probe" / "weights.txt").read_text() == "probe"
    shipped = ck.load_world_model(package)
    assert shipped.info["version"] == "test" and shipped.info["shipped_from"] == str(source)
    a, b = DiT.from_pretrained(source / "student").state_dict(), shipped.student.state_dict()
    assert all(torch.allclose(a[k], b[k].float(), atol=1e-3) for k in a)  # fp16 storage
    t = DiT.from_pretrained(package / "teacher")
    assert next(iter(t.state_dict().values())).shape == next(iter(a.values())).shape
