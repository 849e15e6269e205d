"""Add the shipped policy's survival (dream and real, seeds 0-19) to the script-survival JSONs measured before the
gate ranked a policy; the script arrays are the ones measured, the policy arrays come from policy_survival."""
import json
from dataclasses import replace
from causvid_env.checkpoint import load_world_model, default_checkpoint_dir
from evaluation.script_survival import compare, policy_survival, plot_survival, one_line
from models.dit import DiT
from models.io import write_json
D = 'docs/results/script_survival/'
base = load_world_model(str(default_checkpoint_dir('cartpole')))
seeds = list(range(20))
real = policy_survival(None, 'cartpole', seeds, 125, 'shipped')
print('real', sum(real) / 20, flush=True)
summary = json.load(open(D + 'summary.json'))
files = {f: json.load(open(D + f + '.json')) for f in ('v8', 'd1_snapshots', 'v7_T1')}
for f, res in files.items():
    for name, m in res['models'].items():
        model = base if name.startswith('checkpoint') else replace(base, student=DiT.from_pretrained(name.replace('student ', '')).eval())
        t = m['temperature'] if f == 'v7_T1' else None
        pd = policy_survival(model, 'cartpole', seeds, 125, 'shipped', t)
        new = compare({k: v['real'] for k, v in m['scripts'].items()}, {k: v['dream'] for k, v in m['scripts'].items()}, m['limit'], real, pd)
        new['temperature'] = m['temperature']
        res['models'][name] = new
        for k, v in summary['models'].items():
            if v['scripts']['wiggle']['dream'] == m['scripts']['wiggle']['dream']:
                summary['models'][k] = new
                print(one_line(k, new), flush=True)
    res['policy'] = 'shipped'
    res['note'] = ('the script arrays come from the command; the policy arrays (the shipped policy, seeds 0-19, image resets) were added by '
                   'evaluation.script_survival.policy_survival after the gate began to rank a policy (runs/surv_policy.py), and the '
                   'summary fields re-aggregated from both')
    write_json(D + f + '.json', res)
summary['policy'] = 'shipped'
write_json(D + 'summary.json', summary)
plot_survival(summary, D + 'summary.png')
