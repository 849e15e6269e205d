"""Keep a stage's resumable state in git between sessions: its state.pt without the optimisers' moments.

    python examples/pack_training_state.py runs/d1/dmd_self_forcing/state.pt weights/cartpole_fp32/dmd_d1_state.pt \
        --half --drop generator_ema

To resume, copy it back as the stage's state.pt of a run directory with the same settings and run the same command:

    mkdir -p runs/d1/dmd_self_forcing && cp weights/cartpole_fp32/dmd_d1_state.pt runs/d1/dmd_self_forcing/state.pt

The stage goes on at its step with fresh optimisers at the configured rates (DMD's Adam runs at beta1 = 0, so that
loses only the second moments). `--half` stores the weights in fp16 and `--drop generator_ema` leaves out DMD's EMA,
which then restarts at the generator: a DMD state of this project's default size in 14 MB instead of 42.
"""
import argparse
import json

from distill.training_utils import pack_training_state


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("state", help="a stage's state.pt")
    p.add_argument("out", help="where to write the packed state")
    p.add_argument("--half", action="store_true", help="store the weights in fp16 (they load back into fp32 modules)")
    p.add_argument("--drop", action="append", default=[], metavar="MODULE",
                   help="leave out a module the stage lists as optional (DMD: generator_ema); repeatable")
    a = p.parse_args(argv)
    info = pack_training_state(a.state, a.out, half=a.half, drop=tuple(a.drop))
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
