#!/usr/bin/env bash
# One lent H200: three self-forcing DMD continuations side by side from the same student, each its
# own process and run directory, then the results packed under $OUT.
set -uo pipefail
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpucarry/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
DMD_SECONDS=${DMD_SECONDS:-390}
C=gpucarry
COMMON="--world cartpole --preset default --device ${DEVICE:-cuda} --set vae_decoder.steps=0 --set branches.points_per_episode=0 --set teacher.state_weight=0"
rm -rf runs; base=runs/base
mkdir -p $base/teacher $base/ode_pairs $base/ode_init $base/vae $base/heads
cp -r $C/vae $base/vae/vae && echo '{"reused_from": "vae_decoder_v4"}' > $base/vae/DONE
cp -r $C/heads/model $base/heads/model && echo '{}' > $base/heads/DONE
cp -r $C/teacher $base/teacher/model && echo '{}' > $base/teacher/DONE
cp -r $C/data $base/data; cp $C/prompts.pt $base/prompts.pt; echo "{}" > $base/ode_pairs/DONE
cp -r $C/student $base/ode_init/model && echo '{}' > $base/ode_init/DONE
t0=$(date +%s)
python3 -m distill.pipeline $COMMON --out $base --set collect.workers=12 ${EXTRA:-} --until heads > runs/base.log 2>&1 || { tail -30 runs/base.log; exit 1; }
echo "data ready in $(( $(date +%s) - t0 )) s"; nvidia-smi --query-gpu=name,memory.used --format=csv
declare -A VARIANT=(
  [A]="--set dmd.guidance_action=2.0 --set dmd.p_random_actions=0.0"
  [B]="--set dmd.guidance_action=2.0 --set dmd.p_random_actions=0.5"
  [C]="--set dmd.guidance_action=3.0 --set dmd.p_random_actions=0.5"
)
for v in A B C; do
  cp -al $base runs/dmd_$v
  timeout $((DMD_SECONDS + 120)) python3 -m distill.pipeline $COMMON --out runs/dmd_$v --set dmd.steps=5000 --set dmd.batch_size=${DMD_BATCH:-32} ${EXTRA:-} \
    --set dmd.data_weight=0.25 --set dmd.max_seconds=$DMD_SECONDS --set dmd.snapshot_every=100 --set dmd.save_every=50 \
    ${VARIANT[$v]} > runs/dmd_$v.log 2>&1 &
done
sleep ${PROBE_AFTER:-60}; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; wait
echo "dmd done in $(( $(date +%s) - t0 )) s"
for v in A B C; do tail -c 400 runs/dmd_$v.log; echo; done
python3 - <<'PY'
import os, tarfile, torch
from pathlib import Path
from models.dit import DiT
out = Path(os.environ["OUT"])
def pack(name, dirs, fp16=True):
    with tarfile.open(out / name, "w") as tar:
        for s in dirs:
            if fp16:
                tmp = s.parent / "fp16" / s.name
                DiT.from_pretrained(s).save_pretrained(tmp, storage_dtype=torch.float16)
                tar.add(tmp, s.name)
            else:
                tar.add(s, s.name)
for v in ("A", "B", "C"):
    d = Path(f"runs/dmd_{v}/dmd_self_forcing")
    print(v, (d / "DONE").read_text() if (d / "DONE").exists() else "not done", sorted(p.name for p in d.glob("model*")))
    final = d / "model"
    if not (final / "config.json").exists():
        snaps = sorted(d.glob("model_step*"), key=lambda p: int(p.name[10:]))
        final = snaps[-1] if snaps else None
    if final is not None:
        pack(f"final16_{v}.tar", [final])
        if v == "B":
            pack("final32_B.tar", [final], fp16=False)
    snaps = {p.name: p for p in d.glob("model_step*")}
    keep = ["model_step100", "model_step200"] if v == "B" else ["model_step200"] if v == "C" else []
    got = [snaps[k] for k in keep if k in snaps]
    if got:
        pack(f"snaps16_{v}.tar", got)
PY
tar -cf $OUT/logs.tar runs/base.log runs/dmd_*.log runs/dmd_*/dmd_self_forcing/log.jsonl runs/dmd_*/dmd_self_forcing/DONE runs/dmd_*/pipeline_config.json 2>/dev/null
ls -la $OUT
