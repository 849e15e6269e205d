#!/usr/bin/env bash
# Everything in docs/RESULTS.md, from a finished pipeline run (default: the shipped recipe in runs/cartpole):
#   python -m distill.pipeline --world cartpole --out runs/cartpole --preset default --threads 1
#   python -m distill.pipeline --world cartpole --out runs/cartpole --preset default --threads 1 --rollout teacher_forcing --set dmd.steps=100
#   python -m distill.pipeline --world cartpole --out runs/cartpole --preset default --threads 1 --ablation no_ode_init --set dmd.steps=100
#   python -m distill.pipeline --world cartpole --out runs/cartpole --preset default --threads 1 --ablation causal_teacher --set dmd.steps=100
# then: RUN=runs/cartpole bash examples/reproduce_results.sh   (V1=DIR adds the previous checkpoint under the same protocol)
set -euo pipefail
RUN=${RUN:-runs/cartpole}
CK=$RUN/checkpoint
PROBE=${PROBE:-causvid_env/checkpoints/cartpole/probe}
R=docs/results
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1
mkdir -p $R
EVAL="--world cartpole --probe $PROBE --episodes 16 --horizons 1,2,5,10 --threads 1"

python examples/training_summary.py --run $RUN --json $R/training.json \
  --command "python -m distill.pipeline --world cartpole --out $RUN --preset default --threads 1"
python examples/closed_loop_eval.py --checkpoint $CK --out $R/closed_loop $EVAL
python examples/closed_loop_eval.py --checkpoint $CK --out $R/closed_loop_window10s --window-seconds 10 --video-episodes 1 $EVAL
python examples/closed_loop_eval.py --checkpoint $CK --out $R/closed_loop_context_noise0.1 --context-noise 0.1 --video-episodes 1 $EVAL
python -m evaluation.action_following --checkpoint $CK --probe $PROBE --seconds 0.24 --starts 12 --json $R/action_following.json
if [ -n "${V1:-}" ]; then
  python examples/closed_loop_eval.py --checkpoint $V1 --out $R/closed_loop_v1 --video-episodes 1 $EVAL
  python -m evaluation.action_following --checkpoint $V1 --probe $PROBE --seconds 0.24 --starts 12 --json $R/action_following_v1.json
fi
python examples/ablation.py --run $RUN --out $R/ablation --probe $PROBE --episodes 16 --horizons 1,2 --teacher-steps 20 --threads 1
python examples/plot_training.py --run $RUN --out docs/training_curves.png
python examples/compose_results.py --results $R --out docs/RESULTS.md
