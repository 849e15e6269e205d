#!/usr/bin/env bash
# Re-train and re-score both PPO agents of the shipped CartPole world model, on one CPU core:
#   1. PPO in the real twin (the reference and the shipped policy; ~35 min, then a ~13 min fine-tune at a larger
#      batch (16 x 128), learning rate 5e-5 and no entropy bonus, which steadies it): the pose encoder
#      (per frame the cart's column and the pole's lean, their differences, the last pushes), one
#      reward per decision scaled to 0.1, cleanrl's 4 epochs x 4 minibatches, entropy 0.03; curve, why its real
#      episodes end, then 100 real CartPole-v1 episodes;
#   2. PPO in the dream only (CausVidVectorEnv over the shipped checkpoint, image resets from
#      real starts; the real agent's encoder and settings; DREAM_STEPS chunks, ~17 min), scored in the
#      real twin every 10 updates (the sim-to-real gap curve), at the end in 100 real episodes and in 20 dream ones;
#   3. the random baseline.
#   bash examples/train_agents.sh                 # writes runs/agents/ and docs/results/{ppo_*,random_in_real}.json, docs/results/agents/
#   SHIP=1 bash examples/train_agents.sh          # also replaces the shipped policy (causvid_env/checkpoints/cartpole/policy)
#   PIN="taskset -c 1" bash examples/train_agents.sh   # pin every command to one core
set -euo pipefail
OUT=${OUT:-runs/agents}
R=docs/results
A=$R/agents
PIN=${PIN:-}
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$A"

REAL="python -m agents.ppo --world cartpole --env real --total-steps ${REAL_STEPS:-204800} --encoder pose --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --eval-every 40 --eval-episodes 10 --out $OUT/ppo_real --no-progress"
FINETUNE="python -m agents.ppo --world cartpole --env real --init-from $OUT/ppo_real --total-steps ${FINETUNE_STEPS:-163840} --num-envs 16 --num-steps 128 --encoder pose --reward-scale 0.025 --update-epochs 4 --num-minibatches 8 --ent-coef 0.0 --learning-rate 0.00005 --eval-every 10 --eval-episodes 20 --out $OUT/ppo_real_ft --no-progress"
$PIN $REAL
$PIN python examples/agent_curves.py --run $OUT/ppo_real --out $A/ppo_real_curve --command "$REAL"
$PIN $FINETUNE
$PIN python examples/agent_curves.py --run $OUT/ppo_real_ft --out $A/ppo_real_finetune_curve --command "$FINETUNE"
$PIN python -m agents.failure_modes --policy $OUT/ppo_real_ft --episodes 20 --json $A/failure_modes_ppo_real.json
$PIN python -m agents.evaluate --policy $OUT/ppo_real_ft --world cartpole --real --episodes 100 --json $R/ppo_real_in_real.json
if [ "${SHIP:-0}" = 1 ]; then
  mkdir -p causvid_env/checkpoints/cartpole/policy
  cp $OUT/ppo_real_ft/policy.json $OUT/ppo_real_ft/policy.safetensors causvid_env/checkpoints/cartpole/policy/
  $PIN python -m agents.evaluate --policy shipped --world cartpole --real --episodes 100 --json $R/ppo_shipped_in_real.json
fi

DREAM="python -m agents.ppo --world cartpole --env dream --total-steps ${DREAM_STEPS:-81920} --num-envs 16 --num-steps 32 --variants default --image-reset-fraction 1.0 --encoder pose --reward-scale 0.025 --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --eval-every ${DREAM_EVAL_EVERY:-10} --eval-episodes 10 --out $OUT/ppo_dream --no-progress"
$PIN $DREAM
$PIN python examples/agent_curves.py --run $OUT/ppo_dream --out $A/ppo_dream_curve --command "$DREAM"
$PIN python -m agents.evaluate --policy $OUT/ppo_dream --world cartpole --real --episodes 100 --json $R/ppo_dream_in_real.json
$PIN python -m agents.evaluate --policy $OUT/ppo_dream --world cartpole --dream --episodes 20 --json $A/ppo_dream_in_dream.json
$PIN python -m agents.evaluate --policy shipped --world cartpole --dream --episodes 20 --json $A/shipped_policy_in_dream.json
$PIN python -m agents.evaluate --policy random --world cartpole --real --episodes 100 --json $R/random_in_real.json
