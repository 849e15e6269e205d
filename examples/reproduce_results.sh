#!/usr/bin/env bash
# Everything in docs/RESULTS.md, from a finished `python -m distill.pipeline --out runs/cartpole`.
# Two streams share the 2 cores: evaluation (A) and agents (B). Each step writes under docs/.
set -euo pipefail
RUN=${RUN:-runs/cartpole}
CK=$RUN/checkpoint
mkdir -p docs/results
python -c "from causvid_env.checkpoint import ship_checkpoint; print(ship_checkpoint('$CK'))"
rm -rf causvid_env/checkpoints/cartpole/probe && cp -r $RUN/probe causvid_env/checkpoints/cartpole/probe
cp $RUN/data/CARD.md docs/DATA_CARD.md

stream_a() {
  python -m causvid_env.action_following --json docs/results/action_following.json
  [ -f docs/results/kv_cache.json ] || python examples/kv_cache_benchmark.py --json docs/results/kv_cache.json --threads 1
  python examples/closed_loop_eval.py --checkpoint $CK --world cartpole --out docs/results/closed_loop --probe $RUN/probe --episodes 8 --threads 1
  python examples/benchmark.py --checkpoint $CK --teacher $RUN/teacher/model --json docs/results/benchmark.json --threads 1
  python examples/ablation.py --run $RUN --out docs/results/ablation --probe $RUN/probe --episodes 4 --horizons 1,2 --teacher-steps 20 --threads 1
  python examples/plot_training.py --run $RUN --out docs/training_curves.png
  python examples/quickstart.py --out docs/results/quickstart --seconds 6
  bash examples/screenshot_viewer.sh || true
}
stream_b() {
  python -m agents.ppo --world cartpole --env dream --checkpoint $CK --out $RUN/ppo_dream --total-steps ${PPO_DREAM_STEPS:-4096} --num-envs 16 --threads 1 --no-progress
  [ -f $RUN/ppo_real/policy.safetensors ] || python -m agents.ppo --world cartpole --env real --out $RUN/ppo_real --total-steps ${PPO_STEPS:-16384} --num-envs 16 --threads 1 --no-progress
  python -m agents.evaluate --policy $RUN/ppo_dream --world cartpole --episodes 100 --real --json docs/results/ppo_dream_in_real.json
  python -m agents.evaluate --policy $RUN/ppo_real --world cartpole --episodes 100 --real --json docs/results/ppo_real_in_real.json
  python -m agents.evaluate --policy random --world cartpole --episodes 100 --real --json docs/results/random_in_real.json
}
stream_a > docs/results/stream_a.log 2>&1 &
stream_b > docs/results/stream_b.log 2>&1 &
wait
python examples/write_results.py --closed-loop docs/results/closed_loop --benchmark docs/results/benchmark.json \
  --kv-cache docs/results/kv_cache.json --ablation docs/results/ablation --out docs/RESULTS.md
python examples/append_results.py --run $RUN --results docs/results --out docs/RESULTS.md
