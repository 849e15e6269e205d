"""examples/policy_ranking.py: Spearman's rank correlation of dream and real scores, and clear errors."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from policy_ranking import main, ranks, spearman  # noqa: E402


def test_ranks_share_ties_and_spearman_reads_order_only():
    assert ranks([5.0, 9.0, 5.0, 1.0]).tolist() == [2.5, 1.0, 2.5, 4.0]
    assert spearman([1, 2, 3, 4], [10, 200, 3000, 40000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 3, 5, 4]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="same length >= 3"):
        spearman([1, 2], [1, 2])


def _eval(path: Path, env: str, mean: float, policy: str) -> str:
    path.write_text(json.dumps({"policy": policy, "env": env, "mean": mean, "std": 4.0, "episodes": 16}))
    return str(path)


def test_policy_ranking_reports_an_inverted_dream_and_names_bad_pairs(tmp_path, capsys):
    real = [400.0, 200.0, 100.0]
    dream = [30.0, 60.0, 90.0]  # the dream likes the worst policy best
    pairs = [f"{_eval(tmp_path / f'd{i}.json', 'dream', d, f'p{i}')}:{_eval(tmp_path / f'r{i}.json', 'real', r, f'p{i}')}"
             for i, (d, r) in enumerate(zip(dream, real))]
    out = main([a for p in pairs for a in ("--pair", p)] + ["--json", str(tmp_path / "o" / "rank.json")])
    assert out["spearman"] == pytest.approx(-1.0) and out["policies"][0]["dream_se"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "o" / "rank.json").read_text())["spearman"] == pytest.approx(-1.0)
    assert "-1.00" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="a ranking needs 3 or more"):
        main(["--pair", pairs[0], "--pair", pairs[1]])
    with pytest.raises(SystemExit, match="expected DREAM_JSON:REAL_JSON"):
        main(["--pair", "only-one.json"] + [a for p in pairs[1:] for a in ("--pair", p)])
    with pytest.raises(SystemExit, match="no file nope.json"):
        main(["--pair", f"nope.json:{tmp_path / 'r0.json'}"] + [a for p in pairs[1:] for a in ("--pair", p)])
    (tmp_path / "bare.json").write_text(json.dumps({"env": "dream", "mean": 1.0}))
    with pytest.raises(SystemExit, match="is not an agents.evaluate result \\(no 'std', 'episodes'\\)"):
        main(["--pair", f"{tmp_path / 'bare.json'}:{tmp_path / 'r0.json'}"] + [a for p in pairs[1:] for a in ("--pair", p)])
    swapped = f"{tmp_path / 'r0.json'}:{tmp_path / 'd0.json'}"
    with pytest.raises(SystemExit, match="the first file must score the dream"):
        main(["--pair", swapped] + [a for p in pairs[1:] for a in ("--pair", p)])
