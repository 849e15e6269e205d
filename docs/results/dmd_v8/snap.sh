#!/usr/bin/env bash
# gate one DMD snapshot: chunk dynamics (72 starts) + held push (12 starts); usage: snap.sh RUN STEP
set -u
cd /work/main && . .venv/bin/activate
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
R=$1; S=$2; M=runs/$R/dmd_self_forcing/model_step$S; [ "$S" = final ] && M=runs/$R/dmd_self_forcing/model
python -m evaluation.chunk_dynamics --student $M --json runs/eval8/cd_${R}_$S.json > runs/eval8/cd_${R}_$S.log 2>&1
python -m evaluation.push_response --student $M --starts 12 --json runs/eval8/push_${R}_$S.json > runs/eval8/push_${R}_$S.log 2>&1
grep -E "student|fail|PASS" runs/eval8/cd_${R}_$S.log; grep -iE "runs/$R" runs/eval8/push_${R}_$S.log | tail -4
CK=runs/ck_${R}_$S; rm -rf $CK; cp -r causvid_env/checkpoints/cartpole $CK; rm -rf $CK/student; cp -r $M $CK/student
python -m agents.evaluate --policy shipped --dream --checkpoint $CK --episodes 20 --threads 1 --json runs/eval8/pid_${R}_$S.json 2>&1 | tail -1
