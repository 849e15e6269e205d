cd /work/main && . .venv/bin/activate
export SDL_VIDEODRIVER=dummy HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
C=docs/results/o4/cross_dream
python -m agents.evaluate --policy shipped --dream --checkpoint runs/ck/o4 --temperature 0.2 --episodes 60 --threads 1 --json $C/shipped_in_o4_dream_60.json 2>&1 | tail -1
for pol in runs/agents/ppo_dream_o1_dr10_82k_seed1 weights/agents/ppo_dream_e4v7_dr10_82k_seed1 runs/agents/ppo_dream_o2_dr10_82k_seed1; do
  python -m agents.evaluate --policy $pol --dream --checkpoint runs/ck/o4 --temperature 0.2 --episodes 60 --threads 1 --json $C/$(basename $pol)_in_o4_dream_60.json 2>&1 | tail -1
done
echo CROSS_DONE
