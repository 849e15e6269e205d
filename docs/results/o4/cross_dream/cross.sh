cd /work/main && . .venv/bin/activate
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
for pol in runs/agents/ppo_dream_o4_dr10_82k_seed1 weights/agents/ppo_dream_e4v7_dr10_82k_seed1; do
  for ck in runs/ck/o4 causvid_env/checkpoints/cartpole; do
    pn=$(basename $pol); cn=$([ $ck = runs/ck/o4 ] && echo o4 || echo v9)
    python -m agents.evaluate --policy $pol --dream --checkpoint $ck --temperature 0.2 --episodes 20 --threads 1 --json docs/results/o4/cross_dream/${pn}_in_${cn}_dream.json 2>&1 | tail -1
  done
done
echo CROSS_DONE
