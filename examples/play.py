"""Play a CausVid world model with the keyboard (same as the `causvid-play` console script).

    python examples/play.py                                  # CartPole, arrow keys
    python examples/play.py --checkpoint runs/cartpole/checkpoint --twin --record play.mp4
    python examples/play.py --help                           # all keys and flags
"""
import sys

from causvid_env.viewer.app import main

if __name__ == "__main__":
    sys.exit(main())
