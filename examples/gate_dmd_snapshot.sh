#!/usr/bin/env bash
# Gate one DMD snapshot of a pipeline run: chunk dynamics (72 starts), held push (12 starts), and the
# shipped real-twin policy for 20 episodes in the snapshot's dream (a copy of the shipped checkpoint
# with the snapshot as its student). Run from the repository root with the project installed:
#   bash examples/gate_dmd_snapshot.sh RUN_DIR STEP EVAL_DIR
#   e.g. bash examples/gate_dmd_snapshot.sh runs/v8n 300 runs/eval9
# reads RUN_DIR/dmd_self_forcing/model_stepSTEP; writes EVAL_DIR/{cd,push,pid}_<run name>_STEP.json (+ .log),
# which `python examples/dmd_gate_curves.py --eval EVAL_DIR --out DIR` collects into learning curves.
set -euo pipefail
if [ $# -ne 3 ]; then echo "usage: $0 RUN_DIR STEP EVAL_DIR" >&2; exit 2; fi
RUN=$1; S=$2; EV=$3; R=$(basename "$RUN")
M=$RUN/dmd_self_forcing/model_step$S
if [ ! -f "$M/config.json" ]; then echo "no snapshot $M: pick a STEP that dmd.snapshot_every saved" >&2; exit 2; fi
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
mkdir -p "$EV"
python -m evaluation.chunk_dynamics --student "$M" --json "$EV/cd_${R}_$S.json" > "$EV/cd_${R}_$S.log" 2>&1
python -m evaluation.push_response --student "$M" --starts 12 --json "$EV/push_${R}_$S.json" > "$EV/push_${R}_$S.log" 2>&1
grep -E "student|fail|PASS" "$EV/cd_${R}_$S.log" || true
grep -E "$M" "$EV/push_${R}_$S.log" | tail -4 || true
CK=$(mktemp -d)
trap 'rm -rf "$CK"' EXIT
cp -r causvid_env/checkpoints/cartpole/. "$CK"; rm -rf "$CK/student"; cp -r "$M" "$CK/student"
python -m agents.evaluate --policy shipped --dream --checkpoint "$CK" --episodes 20 --threads 1 --json "$EV/pid_${R}_$S.json" 2>&1 | tail -1
