#!/usr/bin/env bash
# Take a real screenshot of the viewer (window manager-free X server) -> docs/viewer.png
#
#   examples/screenshot_viewer.sh [CHECKPOINT]      # default: the checkpoint shipped with the package
#
# Needs xvfb-run (Debian/Ubuntu: apt-get install xvfb) and ImageMagick's `import`
# (apt-get install imagemagick); installs nothing itself. The viewer runs in twin mode with a
# scripted session (pushes, a typed prompt, Tab), pauses when done and saves its own PNG; then
# `import -window root` grabs the X screen, which is exactly the window's size.
# Env: PYTHON (default: python), SCALE (default: 6), OUT (default: docs/viewer.png).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SCALE=${SCALE:-6}
OUT=${OUT:-docs/viewer.png}
for tool in xvfb-run import; do
  command -v "$tool" >/dev/null || { echo "screenshot_viewer.sh: '$tool' not found; apt-get install xvfb imagemagick" >&2; exit 1; }
done
CKPT_ARGS=()
[ $# -ge 1 ] && CKPT_ARGS=(--checkpoint "$1")
# window = 2 panels of (96*SCALE) x (64*SCALE) for cartpole in twin mode
read -r W H < <("$PYTHON" -c "from causvid_env.worlds import get_world as g; w=g('cartpole'); print(2*w.frame_width*$SCALE, w.frame_height*$SCALE)")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$(dirname "$OUT")"

cat > "$TMP/inner.sh" <<INNER
set -euo pipefail
export SDL_VIDEO_WINDOW_POS=0,0 SDL_AUDIODRIVER=dummy
"$PYTHON" -m causvid_env.viewer.app ${CKPT_ARGS[@]+"${CKPT_ARGS[@]}"} --scale $SCALE --seed 0 --steps 8 \
  --script "right*2,T:a long red pole on a black cart under low gravity,right,Tab,left,right,left,right,left" \
  --screenshot "$TMP/pygame.png" --linger 4 &
pid=\$!
for _ in \$(seq 1 600); do [ -s "$TMP/pygame.png" ] && break; kill -0 \$pid 2>/dev/null || break; sleep 0.2; done
[ -s "$TMP/pygame.png" ] || { echo "viewer did not finish its scripted steps" >&2; kill \$pid 2>/dev/null; exit 1; }
sleep 0.5
import -window root "$OUT"
wait \$pid
INNER
xvfb-run -a -s "-screen 0 ${W}x${H}x24" bash "$TMP/inner.sh"
echo "wrote $OUT"
