"""The evaluation layer, on top of everything else: it may import `models`, `causvid_env`,
`distill` and `agents`, and nothing imports it (tests/test_architecture.py).

- :mod:`evaluation.rollouts` -- closed-loop rollouts: the real twin under scripted policies, then
  the student, the teachers and the baselines replaying its actions;
- :mod:`evaluation.metrics` -- per-frame scores against the twin, pooled per horizon;
- :mod:`evaluation.report` -- markdown tables, JSON, plots, frame strips and videos;
- :mod:`evaluation.probe` -- the state probe (reads pole angle and cart position from a frame)
  and its training: ``python -m evaluation.probe``;
- :mod:`evaluation.action_following` -- push right vs left, dream vs twin:
  ``python -m evaluation.action_following``;
- :mod:`evaluation.benchmarks` -- timing helpers of the speed benchmarks.
"""
