#!/usr/bin/env bash
# Continue the cumulative CartPole recipe on one lent GPU for a fixed number of minutes, and pack
# what it trained into a few files small enough to bring back (one .tar per stage, fp32).
#
# Every training stage gets a wall-clock budget (`--set STAGE.max_seconds=S`): it ends, saved and
# marked done, at the step it reached, so the whole run fits the lease and the next stage starts
# from what the last one managed. Stages already done in RUN (data, VAE, latents, branches, heads,
# state head copied from a CPU run) are skipped.
#
#   RUN=runs/gpu INIT=weights/cartpole_fp32 PACK=runs/gpu_pack bash examples/train_on_gpu.sh \
#       --set teacher.steps=20000 --set teacher.batch_size=64 --set teacher.max_seconds=200 \
#       --set ode_pairs.num_pairs=1024 --set ode_pairs.batch_size=64 \
#       --set ode_init.steps=5000 --set ode_init.batch_size=32 --set ode_init.max_seconds=60 \
#       --set dmd.steps=5000 --set dmd.batch_size=32 --set dmd.max_seconds=170
#
# PACK gets teacher.tar, ode_init.tar, dmd.tar (each a save_pretrained directory), logs.tar (every
# stage's log.jsonl and DONE summary, the pipeline's log, nvidia-smi) and timings.json.
# Unpack here with `tar -xf PACK/teacher.tar -C runs/gpu` and gate each model with
# `python -m evaluation.push_response`.
set -uo pipefail
RUN=${RUN:?set RUN to the run directory}
PACK=${PACK:?set PACK to the folder the packed results go to}
INIT=${INIT:-}
HARD_LIMIT=${HARD_LIMIT:-560}   # seconds: the pipeline is killed after this, whatever its budgets say
mkdir -p "$PACK"
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=${TORCH_ALLOW_TF32_CUBLAS_OVERRIDE:-1} PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$PACK/gpu.txt" 2>&1 || true

timeout "$HARD_LIMIT" python3 -m distill.pipeline --world cartpole --out "$RUN" --preset default --device "${DEVICE:-cuda}" \
  ${INIT:+--init-from "$INIT"} --set vae_decoder.steps=0 "$@" > "$RUN/pipeline.log" 2>&1
rc=$?
end=$(date +%s)

pack_model() {  # pack_model NAME STAGE_DIR: the stage's final model, else its latest snapshot
  local name=$1 dir=$2 src=""
  if [ -f "$dir/model/config.json" ]; then src=model
  else src=$(ls -d "$dir"/model_step* 2>/dev/null | sed 's/.*model_step//' | sort -n | tail -1); src=${src:+model_step$src}
  fi
  [ -n "$src" ] && tar -cf "$PACK/$name.tar" -C "$dir" "$src" && echo "packed $dir/$src"
}
pack_model teacher "$RUN/teacher"
pack_model ode_init "$RUN/ode_init"
pack_model dmd "$RUN/dmd_self_forcing"
(cd "$RUN" && tar -cf "$PACK/logs.tar" pipeline.log pipeline_config.json $(ls -d */log.jsonl */DONE 2>/dev/null))
python3 - "$RUN" "$rc" "$((end - start))" > "$PACK/timings.json" <<'EOF'
import json, re, sys
from pathlib import Path
run, rc, wall = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
stages = {}
for d in ("teacher", "ode_init", "dmd_self_forcing"):
    done = run / d / "DONE"
    logf = run / d / "log.jsonl"
    rows = [json.loads(l) for l in logf.read_text().splitlines()] if logf.exists() else []
    rates = [r["charts/steps_per_s"] for r in rows if "charts/steps_per_s" in r]
    stages[d] = {"done": done.exists(), "summary": json.loads(done.read_text()) if done.exists() else None,
                 "last_logged_step": rows[-1]["step"] if rows else 0,
                 "median_steps_per_s": sorted(rates)[len(rates) // 2] if rates else None}
marks = re.findall(r"\[pipeline (\d\d:\d\d:\d\d)\] (.*)", (run / "pipeline.log").read_text())
print(json.dumps({"exit_code": rc, "wall_s": wall, "stages": stages, "stage_starts": marks}, indent=2))
EOF
cat "$PACK/timings.json"
tail -c 3000 "$RUN/pipeline.log"
