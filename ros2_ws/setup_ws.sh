#!/usr/bin/env bash
# Prepare the colcon workspace in ros2_ws/: link this repository in as src/flipper_learning and fetch the
# source-only ROS dependencies listed in flipper_learning.repos (when vcstool is installed).
# Idempotent: run it as often as you like. Usage: bash ros2_ws/setup_ws.sh [--no-import]
set -euo pipefail

ws="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$ws/src"

# Relative link (src/flipper_learning -> ../..), so the checkout can be moved. colcon identifies the
# package at the link's target (package.xml, setup.py) and does not descend into a package, so it never
# walks back into ros2_ws through the link.
link="$ws/src/flipper_learning"
if [ -L "$link" ]; then
  [ "$(readlink "$link")" = "../.." ] || { rm "$link"; ln -s ../.. "$link"; }
elif [ -e "$link" ]; then
  echo "error: $link exists and is not a symlink; move it away and run again" >&2
  exit 1
else
  ln -s ../.. "$link"
fi
echo "linked $link -> $(cd "$link" && pwd -P)"

if [ "${1:-}" != "--no-import" ]; then
  if command -v vcs >/dev/null 2>&1; then
    vcs import --skip-existing "$ws/src" < "$ws/flipper_learning.repos"
  else
    echo "note: vcstool not found; grid_map_msgs must come from apt (ros-\$ROS_DISTRO-grid-map-msgs)" \
         "or from: vcs import src < flipper_learning.repos" >&2
  fi
fi
