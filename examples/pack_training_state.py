"""Keep a stage's resumable state in git between sessions: its state.pt without the optimisers' moments.

    python examples/pack_training_state.py runs/d1/dmd_self_forcing/state.pt weights/cartpole_fp32/dmd_d1_state.pt

To resume, copy it back as the stage's state.pt of a run directory with the same settings and run the same command:

    mkdir -p runs/d1/dmd_self_forcing && cp weights/cartpole_fp32/dmd_d1_state.pt runs/d1/dmd_self_forcing/state.pt

The stage goes on at its step with fresh optimisers at the configured rates (DMD's Adam runs at beta1 = 0, so that
loses only the second moments).
"""
import argparse
import json

from distill.training_utils import pack_training_state


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("state", help="a stage's state.pt")
    p.add_argument("out", help="where to write the packed state")
    a = p.parse_args(argv)
    info = pack_training_state(a.state, a.out)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
