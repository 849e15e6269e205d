"""agents/: PPO end to end on the real twin (and the dream), the policy files, the evaluator, the baselines."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.baselines import BalancingAgent, KeyboardAgent, RandomAgent
from agents.evaluate import evaluate
from agents.observations import LastFrameRealEnv, VectorFrameStack, stack_frames
from agents.policy import Policy, PolicyConfig, load_policy, shipped_policy_dir
from agents.ppo import Args, batched_options, parse_args, train
from causvid_env.real_env import RealWorldEnv
from causvid_env.worlds import get_world

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = dict(channels=(4, 8), hidden=16, downsample=4)


def _tiny_args(tmp_path, **kw) -> Args:
    base = dict(env="real", out=str(tmp_path / "ppo"), total_steps=64, num_envs=2, num_steps=16,
                num_minibatches=2, update_epochs=1, progress=False, **TINY_NET)
    base.update(kw)
    return Args(**base)


def test_ppo_cli_trains_on_real_twin(tmp_path):
    """The script end to end in a subprocess, like cleanrl's smoke tests."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "agents.ppo", "--world", "cartpole", "--env", "real", "--total-steps", "128",
           "--num-envs", "2", "--num-steps", "32", "--update-epochs", "1", "--channels", "4,8", "--hidden", "16",
           "--downsample", "4", "--out", str(out), "--seed", "3", "--no-progress"]
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("policy.safetensors", "policy.json", "returns.json", "log.jsonl", "args.json"):
        assert (out / name).is_file(), name
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    keys = set().union(*logs)
    assert {"charts/episodic_return", "losses/value_loss", "losses/policy_loss", "losses/entropy",
            "charts/SPS", "global_step"} <= keys
    rets = json.loads((out / "returns.json").read_text())
    assert rets["env"] == "real" and len(rets["episodic_return"]) > 0
    # a CartPole episode's return is frames survived: a handful of chunks of 4 frames
    assert all(1 <= x <= 500 for x in rets["episodic_return"])
    assert load_policy(out).info["global_step"] == 128


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize("stack", [False, True])
def test_ppo_other_autoreset_modes(tmp_path, mode, stack):
    """Any gymnasium VectorEnv works: SAME_STEP (final_obs in infos) and DISABLED (we reset),
    with chunks or with stacked last frames."""
    if stack:
        envs = VectorFrameStack(gym.vector.SyncVectorEnv([lambda: LastFrameRealEnv("cartpole", max_episode_frames=24)] * 2,
                                                         autoreset_mode=mode), 3)
        obs = dict(obs_mode="last", frame_stack=3)
    else:
        envs = gym.vector.SyncVectorEnv([lambda: RealWorldEnv("cartpole", max_episode_frames=24)] * 2, autoreset_mode=mode)
        obs = dict(obs_mode="chunk", frame_stack=1)
    res = train(_tiny_args(tmp_path, max_episode_steps=6, **obs), envs=envs)
    assert res["global_step"] == 64
    # with a 24-frame cap every episode ends by termination or truncation within 6 chunks
    assert len(res["returns"]) >= 64 // 6 and max(res["lengths"]) <= 6
    assert max(res["returns"]) <= 24


def test_load_policy_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = PolicyConfig(obs_shape=(4, 64, 96, 3), channels=(4, 8), hidden=16)
    policy = Policy(cfg)
    with torch.no_grad():  # move the actor away from its near-uniform init so argmax is not a tie
        policy.actor.weight.normal_()
    policy.save(tmp_path / "p", info={"note": "test"})
    loaded = load_policy(tmp_path / "p")
    obs = np.random.default_rng(0).integers(0, 256, (8, 4, 64, 96, 3), dtype=np.uint8)
    a1, a2 = policy.act(obs), loaded.act(obs)
    assert a1.shape == (8,) and a1.dtype == np.int64 and np.array_equal(a1, a2)
    assert loaded.info == {"note": "test"}
    single = loaded.act(obs[0])
    assert np.ndim(single) == 0 and single == a1[0]
    for k, v in policy.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(ValueError, match="obs must have shape"):
        loaded.act(obs[:, :2])
    with pytest.raises(FileNotFoundError, match="policy.json"):
        load_policy(tmp_path / "missing")


def test_box_action_policy_gaussian_head(tmp_path):
    space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    from models.actions import space_to_dict
    policy = Policy(PolicyConfig(obs_shape=(4, 64, 64, 3), action_space=space_to_dict(space), **TINY_NET))
    obs = torch.zeros(3, 4, 64, 64, 3, dtype=torch.uint8)
    a, logp, ent, v = policy.get_action_and_value(obs)
    assert a.shape == (3, 1) and logp.shape == ent.shape == v.shape == (3,)
    env_a = policy.act(obs.numpy(), deterministic=False)
    assert env_a.shape == (3, 1) and all(space.contains(x) for x in env_a)
    policy.save(tmp_path / "box")
    assert np.allclose(load_policy(tmp_path / "box").act(obs.numpy()), policy.act(obs.numpy()))


def test_evaluate_random_and_balancing_in_real_twin():
    res = evaluate("random", "cartpole", episodes=3, seed=0, progress=False)
    assert len(res["returns"]) == 3 and res["env"] == "real" and res["max_frames"] == 500
    # random CartPole survives ~10-40 frames; at least 8 frames (2 chunks), never near 500
    assert 5 <= res["mean"] <= 60 and res["min"] >= 5, res
    assert res["returns"] == [float(f) for f in res["frames"]]
    oracle = evaluate("balancing", "cartpole", episodes=1, seed=0, progress=False)
    assert oracle["returns"] == [500.0] and oracle["lengths"] == [125]


def test_evaluate_cli_writes_json(tmp_path):
    from agents.evaluate import main
    out = tmp_path / "eval.json"
    res = main(["--policy", "random", "--episodes", "2", "--max-steps", "3", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["returns"] == res["returns"] and all(r <= 12 for r in saved["returns"])


def test_baselines():
    env = RealWorldEnv("cartpole")
    obs, info = env.reset(seed=0)
    agent = RandomAgent(env.action_space, seed=0)
    assert env.action_space.contains(agent.act(obs, info))
    assert BalancingAgent().act(obs, info) in (0, 1)
    with pytest.raises(ValueError, match="info"):
        BalancingAgent().act(obs, None)
    kb = KeyboardAgent.from_world("cartpole")  # {"left": 0, "right": 1}, no null action
    assert kb.action_for(["right"]) == 1
    assert kb.action_for([]) == 1  # no no-op in CartPole: repeat the last action
    assert kb.action_for(["left"]) == 0
    pend = KeyboardAgent.from_world("pendulum")
    assert pend.action_for([]) == [0.0] and pend.action_for(["left"]) == [-2.0]
    with pytest.raises(ValueError, match="keymap"):
        KeyboardAgent({})


def test_keyboard_agent_polls_pygame():
    pygame = pytest.importorskip("pygame")
    pygame.display.init()
    try:
        pygame.display.set_mode((8, 8))
        kb = KeyboardAgent({"left": 0, "right": 1}, null_action=None)
        assert kb.act() in (0, 1)  # nothing pressed under the dummy driver: the remembered action
    finally:
        pygame.display.quit()


def test_args_cli_and_validation(tmp_path):
    args = parse_args(["--total-steps", "10", "--no-anneal-lr", "--channels", "4,8", "--env", "real"])
    assert args.total_steps == 10 and args.anneal_lr is False and args.channels == (4, 8)
    with pytest.raises(ValueError, match="num_minibatches"):
        train(_tiny_args(tmp_path, num_minibatches=3))
    with pytest.raises(ValueError, match="env"):
        train(_tiny_args(tmp_path, env="sim"))
    assert batched_options([{"prompt": "a"}, {"prompt": "b", "image": 1}]) == {"image": [None, 1], "prompt": ["a", "b"]}


def _tiny_checkpoint(tmp_path):
    try:
        from tests.helpers import tiny_checkpoint
    except ImportError:
        pytest.skip("tests/helpers.py::tiny_checkpoint (a tiny random world-model checkpoint) is not there yet; "
                    "the dream PPO test needs it")
    return tiny_checkpoint(tmp_path / "ckpt")


def test_ppo_trains_in_the_dream(tmp_path):
    pytest.importorskip("causvid_env.vector_env")
    ckpt = _tiny_checkpoint(tmp_path)
    res = train(_tiny_args(tmp_path, env="dream", checkpoint=str(ckpt), total_steps=64, num_steps=16,
                           image_reset_fraction=0.5, variants="all", max_episode_steps=8))
    assert res["global_step"] == 64
    out = Path(res["out"])
    policy = load_policy(out)
    assert policy.info["trained_in"] == "dream"
    # the dream-trained policy acts in the real twin
    score = evaluate(policy, "cartpole", episodes=1, max_steps=4, progress=False)
    assert 1 <= score["returns"][0] <= 16
    # and is scored in the dream, starting from a real frame
    dream = evaluate(policy, "cartpole", episodes=1, env="dream", checkpoint=str(ckpt), max_steps=3, progress=False, temperature=0.5)
    assert dream["env"] == "dream" and 1 <= dream["lengths"][0] <= 3 and np.isfinite(dream["mean"]) and dream["temperature"] == 0.5


def test_policy_json_uses_the_one_action_schema_and_reads_the_legacy_one(tmp_path):
    Policy(PolicyConfig(obs_shape=(4, 64, 96, 3), channels=(4, 8), hidden=16)).save(tmp_path / "p")
    path = tmp_path / "p" / "policy.json"
    meta = json.loads(path.read_text())
    assert meta["config"]["action_space"] == {"type": "Discrete", "n": 2, "start": 0}  # models.actions.space_to_dict
    meta["config"]["action_space"]["type"] = "discrete"  # how policies were saved before the schemas merged
    path.write_text(json.dumps(meta))
    assert load_policy(tmp_path / "p").action_space == gym.spaces.Discrete(2)
    with pytest.raises(ValueError, match="Discrete or Box"):
        PolicyConfig(obs_shape=(4, 64, 96, 3), action_space={"type": "MultiBinary", "n": 3})


# ----------------------------------------------------------------------------- observations


def _rollout(env, actions, seed):
    """Observations, rewards, ends and infos of one seeded episode under fixed actions."""
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            break
    return out


@pytest.mark.parametrize("policy,frames", [("random", 500), ("balancing", 18)])
def test_last_frame_real_env_matches_the_real_twin(policy, frames):
    """Rendering only the last frame changes nothing an agent sees: same frames, rewards, ends
    (termination under random actions; truncation inside a chunk at 18 frames) and infos."""
    rng = np.random.default_rng(0)
    fast = LastFrameRealEnv("cartpole", max_episode_frames=frames)
    twin = RealWorldEnv("cartpole", obs_mode="last", max_episode_frames=frames)
    assert fast.observation_space == twin.observation_space
    for seed in range(3):
        _, info = twin.reset(seed=seed)
        if policy == "random":
            actions = rng.integers(0, 2, 200).tolist()
        else:  # the oracle's actions on the twin's states (deterministic in the seed)
            actions, agent, done, inf = [], BalancingAgent(), False, info
            while not done:
                actions.append(agent.act(None, inf))
                _, _, term, trunc, inf = twin.step(actions[-1])
                done = term or trunc
        a, b = _rollout(twin, actions, seed), _rollout(fast, actions, seed)
        assert len(a) == len(b) and len(a) > 1
        assert a[-1][2 if policy == "random" else 3], "the episode should end by termination / truncation"
        for x, y in zip(a, b):
            assert np.array_equal(x[0], y[0]) and x[1:-1] == y[1:-1]
            assert x[-1].keys() == y[-1].keys()
            for k in x[-1]:
                assert np.array_equal(np.asarray(x[-1][k]), np.asarray(y[-1][k])), k


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_frame_stack_matches_gymnasium_frame_stack(mode):
    """VectorFrameStack over N envs = gymnasium's FrameStackObservation on each, across episode ends."""
    k, n, cap = 3, 2, 20
    envs = VectorFrameStack(gym.vector.SyncVectorEnv([lambda: LastFrameRealEnv("cartpole", max_episode_frames=cap)] * n,
                                                     autoreset_mode=mode), k)
    singles = [stack_frames(RealWorldEnv("cartpole", obs_mode="last", max_episode_frames=cap), k) for _ in range(n)]
    assert envs.single_observation_space.shape == singles[0].observation_space.shape == (k, 64, 96, 3)
    obs, _ = envs.reset(seed=5)
    expect = [e.reset(seed=5 + i)[0] for i, e in enumerate(singles)]
    assert all(np.array_equal(obs[i], expect[i]) for i in range(n))
    assert all((obs[:, j] == obs[:, 0]).all() for j in range(k))  # a reset fills the stack with its frame
    rng, ends, pending = np.random.default_rng(1), 0, [False] * n
    for _ in range(40):
        acts = rng.integers(0, 2, n)
        obs, _, term, trunc, info = envs.step(acts)
        for i, e in enumerate(singles):
            if pending[i]:  # NEXT_STEP: this step only resets
                want, pending[i] = e.reset()[0], False
            else:
                want, _, t, tr, _ = e.step(int(acts[i]))
                if t or tr:
                    ends += 1
                    if mode == AutoresetMode.SAME_STEP:
                        assert np.array_equal(info["final_obs"][i], want)
                        want = e.reset()[0]
                    else:
                        pending[i] = True
            assert np.array_equal(obs[i], want)
    assert ends >= 2


def test_policy_config_checks_the_observation(tmp_path):
    cfg = PolicyConfig(obs_shape=(4, 64, 96, 3), obs_mode="last", frame_stack=4, crop_rows=(16, 52), downsample=(2, 1))
    assert cfg.downsample == (2, 1) and PolicyConfig(downsample=2).downsample == (2, 2)
    x = Policy(cfg).preprocess(torch.zeros(3, 4, 64, 96, 3, dtype=torch.uint8))
    assert x.shape == (3, 4, 18, 96)  # (B, T, rows 16..52 pooled by 2, full width)
    with pytest.raises(ValueError, match="frame_stack"):
        PolicyConfig(obs_shape=(4, 64, 96, 3), obs_mode="chunk", frame_stack=4)
    with pytest.raises(ValueError, match="obs_shape"):
        PolicyConfig(obs_shape=(3, 64, 96, 3), obs_mode="last", frame_stack=4)
    with pytest.raises(ValueError, match="crop_rows"):
        PolicyConfig(crop_rows=(40, 70))
    with pytest.raises(ValueError, match="obs_mode"):
        train(_tiny_args(tmp_path, obs_mode="pixels"))
    with pytest.raises(ValueError, match="frame_stack"):
        train(_tiny_args(tmp_path, obs_mode="chunk", frame_stack=2))


def test_agent_observation_is_one_the_dream_produces(tmp_path):
    """The PPO defaults stack obs_mode='last' frames: a mode of the dream env, with the same
    spaces in the dream (CausVidVectorEnv + VectorFrameStack) and in the real twin."""
    pytest.importorskip("causvid_env.vector_env")
    from agents.ppo import make_dream_envs, make_real_envs

    args = _tiny_args(tmp_path, checkpoint=str(_tiny_checkpoint(tmp_path)))
    assert args.obs_mode == "last" and args.frame_stack == 4
    dream, real = make_dream_envs(args), make_real_envs(args)
    assert dream.single_observation_space == real.single_observation_space
    assert dream.single_observation_space.shape == (4, 64, 96, 3)
    d_obs, _ = dream.reset(seed=0)
    r_obs, _ = real.reset(seed=0)
    assert d_obs.shape == r_obs.shape == (2, 4, 64, 96, 3) and d_obs.dtype == r_obs.dtype == np.uint8
    dream.close()
    real.close()


# ----------------------------------------------------------------------------- the shipped policy


def test_shipped_policy_is_small_reads_the_dreams_observation_and_balances(tmp_path):
    """`--policy shipped` loads the package's policy; it is small, observes like the dream, and
    balances the real CartPole-v1 longer than random actions ever did (random's best of 100
    episodes: 65 frames, docs/results/random_in_real.json) in both seeded episodes."""
    from agents.evaluate import main
    d = shipped_policy_dir("cartpole")
    assert sum(f.stat().st_size for f in d.iterdir()) < 1_000_000
    policy = load_policy(d)
    cfg = policy.config
    spec = get_world("cartpole")
    frame = (spec.frame_height, spec.frame_width, 3)
    assert cfg.obs_mode in ("chunk", "last") and cfg.frame_stack > 1  # one frame shows no velocity
    assert cfg.obs_shape == (cfg.frame_stack, *frame)
    assert policy.info["trained_in"] == "real"
    out = tmp_path / "shipped.json"
    res = main(["--policy", "shipped", "--world", "cartpole", "--real", "--episodes", "2", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert {"policy", "world", "env", "episodes", "mean", "std", "min", "max", "returns", "frames",
            "max_frames"} <= set(saved)
    assert saved["policy"] == "shipped" and saved["env"] == "real" and saved["episodes"] == 2
    # seeds 0 and 1: 500 frames each since the encoder reads the reset's padding from rest (seed 0
    # was an 11-frame start failure before; docs/results/agents/ppo_real_pose_padfix_in_real.json)
    assert saved["returns"] == res["returns"] and min(saved["returns"]) > 65, saved["returns"]
    assert saved["command"].startswith("python -m agents.evaluate --policy shipped")


def test_rows_encoder_reads_the_pole_and_saves_its_statistics(tmp_path):
    """RowProfile: a row's centre is the ink's mean column; the motion features see a one-pixel
    shift; the running statistics are updated by training and saved with the weights."""
    from agents.policy import RowProfile
    x = torch.zeros(1, 2, 3, 8)  # (B, frames, rows, columns), oldest frame first
    x[0, 0, 1, 2] = 1.0  # older frame: row 1 inked at column 2
    x[0, 1, 1, 3] = 1.0  # latest frame: one column to the right
    f = RowProfile.raw(x).view(3, 3)  # (latest centre, motion, log mass) x rows
    assert f[0, 1] == pytest.approx((3 - 3.5) / 1.01) and f[1, 1] == pytest.approx(-1 / 1.01)
    assert f[0, 0] == f[1, 0] == 0 and f[2, 1] == pytest.approx(np.log(2.0))

    cfg = PolicyConfig(obs_shape=(4, 64, 96, 3), obs_mode="last", frame_stack=4, crop_rows=(16, 52), encoder="rows",
                       downsample=1, hidden=16)
    policy = Policy(cfg)
    env = stack_frames(LastFrameRealEnv("cartpole"), 4)
    o, info = env.reset(seed=0)
    obs = [o]
    for _ in range(5):
        o, _, term, trunc, info = env.step(BalancingAgent().act(None, info))
        obs.append(o)
        assert not (term or trunc)
    batch = torch.as_tensor(np.stack(obs))
    policy.update_normalizer(batch)
    assert policy.cnn.count == len(obs) and policy.cnn.mean.abs().sum() > 0
    with torch.no_grad():
        policy.actor.weight.normal_()
    policy.save(tmp_path / "rows")
    loaded = load_policy(tmp_path / "rows")
    assert torch.equal(loaded.cnn.mean, policy.cnn.mean) and torch.equal(loaded.cnn.var, policy.cnn.var)
    assert np.array_equal(loaded.act(batch.numpy()), policy.act(batch.numpy()))
    with pytest.raises(ValueError, match="grayscale"):
        PolicyConfig(encoder="rows", grayscale=False)


def test_ppo_init_from_warm_starts_the_weights(tmp_path):
    first = _tiny_args(tmp_path, out=str(tmp_path / "a"))
    train(first)
    src = load_policy(first.out)
    # learning rate 0: the warm-started weights come out as they went in
    train(_tiny_args(tmp_path, out=str(tmp_path / "b"), init_from=first.out, learning_rate=0.0))
    warm = load_policy(tmp_path / "b")
    assert torch.equal(warm.actor.weight, src.actor.weight) and torch.equal(warm.critic.weight, src.critic.weight)
    with pytest.raises(ValueError, match="init-from"):
        train(_tiny_args(tmp_path, out=str(tmp_path / "c"), init_from=first.out, hidden=TINY_NET["hidden"] * 2))


def test_rows_rel_encoder_takes_the_centres_relative_to_the_median():
    """rows_rel: shifting the whole frame moves only the median features, not the row centres."""
    from agents.policy import RowProfile
    x = torch.zeros(1, 2, 4, 16)  # (B, frames, rows, columns); row 3 stays blank
    for t, shift in enumerate((0, 2)):  # the latest frame is the older one moved 2 columns right
        x[0, t, 0, 5 + shift] = x[0, t, 1, 6 + shift] = x[0, t, 2, 9 + shift] = 1.0
    f = RowProfile.raw(x, relative=True)
    assert f.shape == (1, RowProfile.n_features(2, 4, relative=True)) == (1, 14)
    latest, motion, ref = f[0, :4], f[0, 4:8], f[0, 12:]
    assert torch.allclose(latest, torch.tensor([-1.0, 0.0, 3.0, 0.0]) / 1.01, atol=1e-5)  # median: row 1
    assert torch.allclose(motion, torch.zeros(4), atol=1e-5)  # the shift is all in the median
    assert ref[1] == pytest.approx(-2 / 1.01, abs=1e-5) and torch.isfinite(RowProfile.raw(torch.zeros(1, 2, 4, 16), True)).all()
    cfg = PolicyConfig(obs_shape=(4, 64, 96, 3), obs_mode="last", frame_stack=4, crop_rows=(16, 52),
                       encoder="rows_rel", downsample=1, hidden=16)
    assert Policy(cfg).act(np.zeros((2, 4, 64, 96, 3), np.uint8)).shape == (2,)


def test_pose_encoder_reads_the_cart_and_the_lean():
    """pose: the cart's column and the pole's lean per frame, from the frames alone; in real
    CartPole frames they follow the simulator's x and theta; blank frames stay finite."""
    from agents.policy import PoseProfile
    x = torch.zeros(1, 2, 6, 32)  # (B, frames, rows, columns): a pole over a 4-px cart
    for t, shift in enumerate((0, 3)):  # the latest frame: moved 3 columns right, pole leaning right
        x[0, t, 4:6, 10 + shift:14 + shift] = 1.0  # the cart: rows 4-5, 4 px of ink each
        for r in range(4):  # the pole: one pixel a row, a column to the right per row up in the latest
            x[0, t, 3 - r, 12 + shift + (r if t else 0)] = 1.0
    cart, lean = PoseProfile.pose(x)
    assert torch.allclose(cart[0], torch.tensor([-4.0, -1.0]), atol=1e-3)  # columns 11.5, 14.5 of 32
    assert lean[0, 0].abs() < 1e-4 and lean[0, 1] == pytest.approx(1.0, abs=2e-2)
    f = PoseProfile.raw(x)
    assert f.shape == (1, PoseProfile.n_features(2)) == (1, 4)  # (cart, its difference, lean, its difference)
    # two chunks' pushes from the cart's curvature: second differences of 1.3 px (agree) and -0.3 px (differ);
    # no two frames identical (identical frames are a reset's padding, read from rest)
    moves = torch.zeros(2, 3, 6, 32)
    cols = torch.arange(32.0)
    for b, path in enumerate(((0.0, -0.1, 1.1), (0.0, 0.1, -0.1))):  # the cart's shift at the 3 frames
        for t, c in enumerate(path):  # a 4-px box over [10 + c, 14 + c]: each column's overlap
            moves[b, t, 4:6] = ((cols + 1).clamp(max=14 + c) - cols.clamp(min=10 + c)).clamp(min=0)
    g = PoseProfile.raw(moves)
    assert torch.allclose(g[:, 1:3], torch.tensor([[-0.1, 1.2], [0.1, -0.2]]), atol=1e-4)  # the differences
    assert g.shape == (2, PoseProfile.n_features(3)) == (2, 10)
    push_prev, push_last = g[:, -2], g[:, -1]
    assert push_prev[0] > 0.9 and push_last[0] > 0.9  # pushed right twice
    assert push_prev[1] < -0.9 and push_last[1] > 0.9  # left, then right
    assert f[0, 1] == pytest.approx(3.0, abs=1e-3) and torch.isfinite(PoseProfile.raw(torch.zeros(1, 4, 6, 32))).all()

    cfg = PolicyConfig(obs_shape=(4, 64, 96, 3), obs_mode="last", frame_stack=4, crop_rows=(16, 52), encoder="pose",
                       downsample=1, hidden=16)
    policy = Policy(cfg)
    assert policy.cnn.mean.shape == (PoseProfile.n_features(4),) == (16,)
    env = stack_frames(LastFrameRealEnv("cartpole"), 4)
    obs, states, rng = [], [], np.random.default_rng(0)
    for seed in range(3):
        o, info = env.reset(seed=seed)
        for _ in range(20):
            o, _, term, trunc, info = env.step(int(rng.integers(2)))
            if term or trunc:
                break
            obs.append(o)
            states.append(info["state"][-1])
    cart, lean = PoseProfile.pose(policy.preprocess(torch.as_tensor(np.stack(obs))))
    states = np.stack(states)
    assert np.corrcoef(cart[:, -1].numpy(), states[:, 0])[0, 1] > 0.999
    assert np.corrcoef(lean[:, -1].numpy(), states[:, 2])[0, 1] > 0.99
    assert policy.act(np.stack(obs[:2])).shape == (2,)


def test_pose_encoder_reads_the_resets_padding_as_rest_not_as_pushes(monkeypatch):
    """At a reset the stack repeats the reset frame; the second difference across the padding is
    the first chunk's curvature from rest (one push, ~0.44 px), not two chunks' pushes: no earlier
    push, the last one with the curvature's sign (the encoder before the fix read it reversed)."""
    from agents.policy import PoseProfile
    cols = torch.arange(32.0)

    def frame(c: float) -> torch.Tensor:  # a 4-px cart over [10 + c, 14 + c] and a straight pole
        f = torch.zeros(6, 32)
        f[4:6] = ((cols + 1).clamp(max=14 + c) - cols.clamp(min=10 + c)).clamp(min=0)
        f[:4, 12] = 1.0
        return f

    # pushed left from rest: the reset frame 3x, then one real chunk; then two real chunks
    one = torch.stack([frame(0.0)] * 3 + [frame(-0.44)])[None]  # (1, 4, 6, 32)
    two = torch.stack([frame(0.0)] * 2 + [frame(-0.44), frame(-0.44 - 1.64)])[None]
    assert PoseProfile.padded(one).tolist() == [[True, True, False]]
    assert PoseProfile.padded(two).tolist() == [[True, False, False]]
    f = PoseProfile.raw(one)  # cart: latest, 3 d, 2 dd; lean: the same; push_prev x2; push_last x2
    assert f.shape == (1, 16) and torch.allclose(f[0, 4:6], torch.tensor([0.0, -0.44]), atol=1e-4)
    assert torch.equal(f[0, 12:14], torch.zeros(2))  # no earlier push: there was none
    assert f[0, 14] == 0.0 and f[0, 15] < -0.9  # the last push: left
    monkeypatch.setattr(PoseProfile, "PAD_MODE", "none")  # the encoder before: phantom pushes
    old = PoseProfile.raw(one)
    assert old[0, 13] < -0.9 and old[0, 15] > 0.9  # "left, then right": wrong twice
    monkeypatch.setattr(PoseProfile, "PAD_MODE", "unknown")
    assert torch.equal(PoseProfile.raw(one)[0, [4, 5, 12, 13, 14, 15]], torch.zeros(6))
    monkeypatch.setattr(PoseProfile, "PAD_MODE", "rest")
    g = PoseProfile.raw(two)  # dd: from rest (-0.44), then left twice (-1.2): both pushes decoded
    assert g[0, 12] == 0.0 and g[0, 14] < -0.9 and g[0, 13] < -0.9 and g[0, 15] < -0.9
    # a real stack (no repeated frame) reads as before the fix
    env = stack_frames(LastFrameRealEnv("cartpole"), 4)
    o, _ = env.reset(seed=0)
    policy = Policy(PolicyConfig(obs_shape=(4, 64, 96, 3), obs_mode="last", frame_stack=4, crop_rows=(16, 52),
                                 encoder="pose", downsample=1, hidden=16))
    stacks = [o]
    for a in (0, 1, 1):
        o, *_ = env.step(a)
        stacks.append(o)
    x = policy.preprocess(torch.as_tensor(np.stack(stacks)))
    assert PoseProfile.padded(x).sum(1).tolist() == [3, 2, 1, 0]
    new = PoseProfile.raw(x)
    monkeypatch.setattr(PoseProfile, "PAD_MODE", "none")
    assert torch.equal(new[3], PoseProfile.raw(x)[3]) and not torch.equal(new[1], PoseProfile.raw(x)[1])
    assert new[1, 15] < -0.9  # the reset's first push was left (action 0)


def test_ppo_trains_in_an_ensemble_of_dreams(tmp_path):
    from agents.ppo import dream_checkpoints
    from tests.helpers import tiny_checkpoint

    a, b = tiny_checkpoint(tmp_path / "a", seed=0), tiny_checkpoint(tmp_path / "b", seed=1)
    assert dream_checkpoints(None) == [None] and dream_checkpoints(f"{a}, {b}") == [str(a), str(b)]
    with pytest.raises(ValueError, match="checkpoint"):
        dream_checkpoints(f"{a},")
    res = train(_tiny_args(tmp_path, env="dream", checkpoint=f"{a},{b}", total_steps=32, num_steps=8, num_envs=4,
                           image_reset_fraction=1.0, max_episode_steps=4))
    assert res["global_step"] == 32 and load_policy(res["out"]).info["checkpoint"] == f"{a},{b}"
    logs = [json.loads(line) for line in (Path(res["out"]) / "log.jsonl").read_text().splitlines()]
    ends = [r for r in logs if "charts/episodic_frames" in r]  # every episode's length is logged under its member too
    assert ends and all(sum(f"charts/episodic_frames_member{j}" in r for j in (0, 1)) == 1 for r in ends)
    assert {j for r in ends for j in (0, 1) if f"charts/episodic_frames_member{j}" in r} == {0, 1}


def test_failure_modes_reads_the_end_and_the_pole_swing():
    from types import SimpleNamespace

    from agents.failure_modes import failure_modes

    class AlwaysLeft:
        config = SimpleNamespace(obs_mode="chunk", frame_stack=1)

        def act(self, obs, info):
            return 0

    held = failure_modes("shipped", episodes=2, max_steps=10)
    pushed = failure_modes(AlwaysLeft(), episodes=2, max_steps=40)
    assert sum(held["counts"].values()) == 2 and held["counts"]["time"] == 2  # the real-twin policy holds 40 frames
    assert pushed["counts"]["pole"] == 2 and all(r["frames"] < 100 for r in pushed["episodes_detail"])
    assert pushed["pole_rms_deg"] > 2 * held["pole_rms_deg"] > 0
    assert held["pole_rms_deg"] == pytest.approx(np.mean([r["pole_rms_deg"] for r in held["episodes_detail"]]))


class _RecordActions(gym.Wrapper):
    """Keeps every action the env is stepped with."""

    def __init__(self, env, log: list):
        super().__init__(env)
        self.log = log

    def step(self, action):
        self.log.append(int(action))
        return self.env.step(action)


def test_action_noise_replaces_a_share_of_the_actions_and_only_those(tmp_path):
    """--action-noise p: about p of the executed actions are uniform draws (half of them differ from the policy's
    on a two-action space); 0 leaves every action as given; a value outside [0, 1] names the argument."""
    from agents.ppo import with_action_noise

    def run(p):
        log: list = []
        envs = gym.vector.SyncVectorEnv([lambda: _RecordActions(gym.make("CartPole-v1"), log)] * 4)
        envs = with_action_noise(envs, p, seed=0)
        envs.reset(seed=0)
        for _ in range(250):
            envs.step(np.zeros(4, dtype=np.int64))
        envs.close()
        return np.asarray(log)

    assert (run(0.0) == 0).all()
    flipped = (run(0.4) == 1).mean()  # 1000 decisions; expected 0.2 (a random action is the policy's half the time)
    assert 0.15 < flipped < 0.25, flipped
    assert 0.4 < (run(1.0) == 1).mean() < 0.6
    with pytest.raises(ValueError, match="action_noise"):
        train(_tiny_args(tmp_path, action_noise=1.5))
    res = train(_tiny_args(tmp_path, action_noise=0.3))  # trains in the real twin with the noise on
    assert res["global_step"] == 64 and json.loads((tmp_path / "ppo" / "args.json").read_text())["action_noise"] == 0.3


def test_policy_ensemble_votes_with_the_mean_probabilities(tmp_path):
    """A vote of a policy with itself is that policy; of two, the argmax of their mean probabilities; members that
    observe differently, a lone member or a non-policy name the argument; evaluate takes comma-separated directories."""
    from agents.evaluate import resolve_policy
    from agents.policy_ensemble import PolicyEnsemble

    torch.manual_seed(0)
    cfg = PolicyConfig(obs_shape=(4, 64, 96, 3), channels=(4, 8), hidden=16)
    a, b = Policy(cfg), Policy(cfg)
    with torch.no_grad():
        a.actor.weight.normal_()
        b.actor.weight.normal_()
    obs = np.random.default_rng(0).integers(0, 256, (32, 4, 64, 96, 3), dtype=np.uint8)
    assert np.array_equal(PolicyEnsemble([a, a]).act(obs), a.act(obs))
    with torch.no_grad():
        x = torch.as_tensor(obs)
        mean = (a.distribution(a.features(x)).probs + b.distribution(b.features(x)).probs) / 2
    vote = PolicyEnsemble([a, b]).act(obs)
    assert np.array_equal(vote, mean.argmax(-1).numpy())
    # a mirror of ``a`` twice as sure of the other action outvotes it everywhere: the vote is not the first member's
    mirror = Policy(cfg)
    mirror.load_state_dict(a.state_dict())
    with torch.no_grad():
        mirror.actor.weight.copy_(2 * a.actor.weight.flip(0))
        mirror.actor.bias.copy_(2 * a.actor.bias.flip(0))
    assert np.array_equal(PolicyEnsemble([a, mirror]).act(obs), 1 - a.act(obs))
    assert PolicyEnsemble([a, b]).act(obs[0]) == vote[0]
    with pytest.raises(ValueError, match="at least two"):
        PolicyEnsemble([a])
    with pytest.raises(ValueError, match="frame_stack"):
        PolicyEnsemble([a, Policy(PolicyConfig(obs_shape=(4, 64, 96, 3), channels=(4, 8), hidden=16, frame_stack=2))])
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    with pytest.raises(ValueError, match="member 1"):
        resolve_policy(f"{tmp_path / 'a'},random")
    res = evaluate(f"{tmp_path / 'a'}, {tmp_path / 'b'}", "cartpole", episodes=2, max_steps=5, progress=False)
    assert len(res["returns"]) == 2


def test_policy_force_scan_scales_the_push_and_scores_policies(tmp_path):
    """The scaled world pushes the cart harder (the cart's speed after one held chunk doubles at 2x), the shipped
    policy holds the pole for the whole capped episode at 1x, and a non-positive scale names the argument."""
    sys.path.insert(0, str(ROOT / "examples"))
    from policy_force_scan import main, scaled_force_world

    def cart_speed(scale):
        env = RealWorldEnv(scaled_force_world(scale))
        env.reset(seed=0)
        _, _, _, _, info = env.step(1)
        env.close()
        return float(np.asarray(info["state"])[-1][1])

    assert cart_speed(2.0) == pytest.approx(2 * cart_speed(1.0), rel=0.05)
    with pytest.raises(ValueError, match="scales"):
        scaled_force_world(0.0)
    res = main(["--policy", f"shipped={shipped_policy_dir('cartpole')}", "--scales", "1.0", "--episodes", "2",
                "--max-steps", "10", "--json", str(tmp_path / "scan.json")])
    assert [r["mean"] for r in res["rows"]] == [40.0] and res["rows"][0]["counts"]["time"] == 2
    assert json.loads((tmp_path / "scan.json").read_text())["command"].startswith("python examples/policy_force_scan.py")


def test_ppo_trains_against_scaled_physics_and_checks_the_argument(tmp_path):
    """``physics_scale`` scales the training twin's physics in every variant (the real checks keep the true one):
    a 0.5x push moves the cart half as fast after a held chunk; a bad entry or a dream env names the argument."""
    from agents.ppo import make_real_envs, parse_physics_scale
    from causvid_env.rendering import scaled_physics

    assert parse_physics_scale("") == {} and parse_physics_scale("force_mag=0.88") == {"force_mag": 0.88}
    for bad in ("force_mag", "force_mag=0", "force_mag=x", "=2", "force_mag=0.9,force_mag=0.8"):
        with pytest.raises(ValueError, match="physics_scale"):
            parse_physics_scale(bad)
    with pytest.raises(ValueError, match="scales"):
        scaled_physics("cartpole", {"not_a_constant": 2.0})
    half = scaled_physics("cartpole", {"force_mag": 0.5})
    assert all(v.physics["force_mag"] == pytest.approx(0.5 * get_world("cartpole").variant(v.name).physics.get("force_mag", 10.0))
               for v in half.variants)

    def cart_speed(args):
        envs = make_real_envs(args)
        envs.reset(seed=0)
        infos = envs.step(np.ones(args.num_envs, dtype=np.int64))[-1]
        envs.close()
        return float(np.asarray(infos["state"])[0, -1, 1])  # env 0, the chunk's last frame, the cart's speed

    base = _tiny_args(tmp_path, frame_stack=1)
    weak = _tiny_args(tmp_path, frame_stack=1, physics_scale="force_mag=0.5")
    assert cart_speed(weak) == pytest.approx(0.5 * cart_speed(base), rel=0.05)
    with pytest.raises(ValueError, match="physics_scale"):
        train(_tiny_args(tmp_path, env="dream", physics_scale="force_mag=0.9"))
    res = train(_tiny_args(tmp_path, physics_scale="force_mag=0.9"))
    assert res["global_step"] == 64 and json.loads((tmp_path / "ppo" / "args.json").read_text())["physics_scale"] == "force_mag=0.9"
