"""examples/gate_candidate.sh: every command it runs names a module or script that exists and
flags that module's parser accepts (its dry run against each `--help`)."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDENT = "causvid_env/checkpoints/cartpole/student"


def _dry_run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DRY_RUN="1")
    return subprocess.run(["bash", "examples/gate_candidate.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not (ROOT / STUDENT / "config.json").is_file(), reason="no checkpoint shipped")
def test_gate_candidate_commands_use_flags_their_parsers_know():
    res = _dry_run(STUDENT, "dryrun")
    assert res.returncode == 0, res.stderr
    lines = [shlex.split(l) for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 14  # survival, 2 closed loops, push, chunks, policy, 2 x (PPO, curve, real, falls)
    assert sum(a[:3] == ["python", "-m", "agents.ppo"] for a in lines) == 2
    assert not (ROOT / "runs/ck/dryrun").exists()  # a dry run writes nothing
    helps: dict[str, str] = {}
    for argv in lines:
        entry = argv[1:3] if argv[1] == "-m" else argv[1:2]
        key = " ".join(entry)
        if key not in helps:
            h = subprocess.run([sys.executable, *entry, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert h.returncode == 0, f"{key} --help: {h.stderr[-500:]}"
            helps[key] = h.stdout
        for tok in argv:
            if tok.startswith("--"):
                assert tok in helps[key], f"{key} has no flag {tok}"


def test_gate_candidate_names_a_missing_student():
    res = _dry_run("no/such/dir", "x")
    assert res.returncode == 2 and "STUDENT_DIR: no student in no/such/dir" in res.stderr
    res = _dry_run("only-one-arg")
    assert res.returncode == 2 and "usage:" in res.stderr
