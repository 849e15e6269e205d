#!/bin/bash
# student_e4v7 at temperature 0.2 (runs/ck/e4v7_T02: its fp32 weights with the package's VAE, heads, policy, probe), measured as a ship candidate
cd /work/main && . .venv/bin/activate
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
O=docs/results/e4v7_T0.2
python -m evaluation.push_response --checkpoint runs/ck/e4v7_T02 --starts 12 --json $O/push_response.json > runs/e4m_push.log 2>&1; echo "push $(date)"
python -m evaluation.chunk_dynamics --checkpoint runs/ck/e4v7_T02 --json $O/chunk_dynamics.json > runs/e4m_cd.log 2>&1; echo "cd $(date)"
python examples/closed_loop_eval.py --checkpoint runs/ck/e4v7_T02 --out runs/e4m_cl48_clip --world cartpole --probe causvid_env/checkpoints/cartpole/probe --episodes 48 --horizons 1,2,5 --context-frames 16 --temperature 0.2 --video-episodes 0 --threads 1 > runs/e4m_cl.log 2>&1; echo "cl clip $(date)"
python examples/first_step_terminations.py --checkpoint runs/ck/e4v7_T02 --seeds 21 --json $O/first_step_terminations.json > runs/e4m_fst.log 2>&1; echo "fst $(date)"
python examples/closed_loop_eval.py --checkpoint runs/ck/e4v7_T02 --out runs/e4m_cl48_image --world cartpole --probe causvid_env/checkpoints/cartpole/probe --episodes 48 --horizons 1,2,5 --temperature 0.2 --video-episodes 0 --threads 1 > runs/e4m_cli.log 2>&1; echo "cl image $(date)"
echo ALL DONE
