#!/usr/bin/env bash
# Gate a candidate student the way the shipped one was chosen: the open-loop gates, then PPO trained
# only in its dream and scored in the real twin. Two chains run side by side (one core each):
#   A: script survival (blind scripts in the dream vs the real twin), then PPO seed 1 in the dream;
#   B: closed loop from 16-frame real clips and from image resets (48 episodes, 0-1 / 1-2 / 2-5 s),
#      the held push (12 starts), chunk dynamics, the shipped policy for 20 episodes in the dream,
#      then PPO seed 2.
# Each PPO run (the DREAM recipe, action noise 0.1, 81,920 decisions) is followed by its learning
# curve, 100 real episodes and 40 classified real falls. About 50 min on two cores.
# Run from the repository root with the project installed:
#   bash examples/gate_candidate.sh STUDENT_DIR NAME
#   e.g. bash examples/gate_candidate.sh runs/o4/ode_init/model o4
# writes docs/results/NAME/ (gates), docs/results/agents/ppo_dream_NAME_dr10_82k_seed{1,2}_* (agents),
# runs/ck/NAME (the shipped checkpoint with the candidate as its student), runs/cl_NAME_{clip,image}
# and runs/gate_NAME/*.log. DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: $0 STUDENT_DIR NAME" >&2; exit 2; fi
S=$1; N=$2
if [ ! -f "$S/config.json" ]; then echo "STUDENT_DIR: no student in $S (expected config.json + model.safetensors)" >&2; exit 2; fi
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
CK=runs/ck/$N; RES=docs/results/$N; LOG=runs/gate_$N
PR="--world cartpole --probe causvid_env/checkpoints/cartpole/probe --episodes 48 --horizons 1,2,5"

run() {  # run (or with DRY_RUN=1 print) one command, its output into the named log
  local log=$1; shift
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@" > "$LOG/$log.log" 2>&1; fi
}

ppo() {  # PPO seed $1 in the candidate's dream, then its curve, 100 real episodes and 40 real falls
  local name=ppo_dream_${N}_dr10_82k_seed$1
  local cmd=(python -m agents.ppo --world cartpole --env dream --checkpoint "$CK" --total-steps 81920 --num-envs 16
             --num-steps 32 --variants default --image-reset-fraction 1.0 --encoder pose --reward-scale 0.025
             --update-epochs 4 --num-minibatches 4 --ent-coef 0.03 --eval-every 10 --eval-episodes 10
             --action-noise 0.1 --seed "$1" --threads 1 --out "runs/agents/$name" --no-progress)
  run "$name" "${cmd[@]}"
  run "${name}_curve" python examples/agent_curves.py --run "runs/agents/$name" --out "docs/results/agents/${name}_curve" --command "${cmd[*]}"
  run "${name}_real" python -m agents.evaluate --policy "runs/agents/$name" --world cartpole --real --episodes 100 --json "docs/results/agents/${name}_in_real.json"
  run "${name}_falls" python -m agents.failure_modes --policy "runs/agents/$name" --episodes 40 --json "docs/results/agents/failure_modes_$name.json"
}

if [ "${DRY_RUN:-0}" != 1 ]; then
  mkdir -p "$RES" "$LOG" runs/ck runs/agents docs/results/agents
  rm -rf "$CK" && cp -r causvid_env/checkpoints/cartpole "$CK" && rm -rf "$CK/student" && cp -r "$S" "$CK/student"
fi
chain_a() {
  run survival python -m evaluation.script_survival --no-progress --student "$S" --json "$RES/script_survival.json"
  ppo 1
}
chain_b() {
  run clip python examples/closed_loop_eval.py --out "runs/cl_${N}_clip" --checkpoint "$CK" $PR --context-frames 16
  run image python examples/closed_loop_eval.py --out "runs/cl_${N}_image" --checkpoint "$CK" $PR
  run push python -m evaluation.push_response --student "$S" --temperature 0.2 --starts 12 --json "$RES/push_response.json"
  run chunks python -m evaluation.chunk_dynamics --student "$S" --temperature 0.2 --json "$RES/chunk_dynamics.json"
  run policy python -m agents.evaluate --policy shipped --dream --checkpoint "$CK" --temperature 0.2 --episodes 20 --threads 1 --json "$RES/shipped_policy_in_dream.json"
  ppo 2
}
if [ "${DRY_RUN:-0}" = 1 ]; then chain_a; chain_b; else chain_a & chain_b & wait; fi
if [ "${DRY_RUN:-0}" != 1 ]; then
  for p in clip image; do
    mkdir -p "$RES/closed_loop_$p"
    cp runs/cl_${N}_$p/{error_vs_horizon.png,metrics.json,strip.png,table.md} "$RES/closed_loop_$p/"
  done
  echo "gates of $N done: $RES, docs/results/agents/ppo_dream_${N}_dr10_82k_seed{1,2}_*"
fi
