#!/usr/bin/env bash
# One short call on a lent H200: the teacher continued at batch 64 for T seconds from the shipped (v6/v7) teacher,
# on this CPU's data, VAE, heads, state head and branches (fp16); the latents are encoded there.
set -uo pipefail
export OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpucarry2/whl/*.whl 2>/dev/null || exit 1
export PYTHONPATH=/tmp/site:$PWD
T=${T:-110}
rm -rf runs; mkdir -p runs && cp -r gpucarry2/run runs/t
t0=$(date +%s)
timeout $((T + 90)) python3 -m distill.pipeline --world cartpole --out runs/t --preset default --device cuda --init-from gpucarry2/init \
  --set vae_decoder.steps=0 --set teacher.state_weight=0.05 --set teacher.batch_size=64 --set teacher.steps=30000 \
  --set teacher.max_seconds=$T --set teacher.snapshot_every=1000 --set teacher.save_every=500 --until teacher > runs/t.log 2>&1
echo "rc $? after $(( $(date +%s) - t0 )) s"; tail -c 1500 runs/t.log
d=runs/t/teacher; src=model; [ -f $d/model/config.json ] || src=$(ls -d $d/model_step* 2>/dev/null | sort -V | tail -1 | xargs -r basename)
[ -n "$src" ] && tar -cf $OUT/teacher.tar -C $d $src
tar -cf $OUT/logs.tar runs/t.log $d/log.jsonl $d/DONE runs/t/pipeline_config.json 2>/dev/null; ls -la $OUT
