#!/usr/bin/env bash
# Build the interface packages that the ROS 2 wheels do not ship (tf2_msgs, grid_map_msgs; their
# definitions are in ros2_ws/interfaces/) into a venv that has the Kilted wheels of requirements-ros.txt.
#
#   bash ros2_ws/build_interfaces.sh [VENV]      (default: .venv of the repository root)
#
# Idempotent: a stamp in VENV keyed by a hash of the interface files, this script and
# requirements-ros.txt makes a second run instant. Needs cmake, ninja and a C/C++ compiler.
# Two fixes on the way (see ros2_ws/README.md): the wheels' CMake export files name the include paths
# of the machine that built them (/opt/python/cp311-cp311/...), which are pointed at this venv's Python
# and numpy headers; and the generators run with the venv's Python.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$(cd "${1:-$root/.venv}" && pwd)"
py="$venv/bin/python"
stamp="$venv/.ros_interfaces_stamp"
packages=(tf2_msgs grid_map_msgs)   # in dependency order

hash="$(cd "$root" && { find ros2_ws/interfaces -type f | LC_ALL=C sort | xargs sha256sum; sha256sum ros2_ws/build_interfaces.sh requirements-ros.txt; } | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  exit 0
fi

for tool in cmake ninja c++; do
  command -v "$tool" >/dev/null || { echo "build_interfaces: '$tool' not found; install cmake, ninja-build and g++" >&2; exit 1; }
done
test -x "$py" || { echo "build_interfaces: no Python at $py (create the venv first)" >&2; exit 1; }
"$py" -c "import rosidl_generator_py" 2>/dev/null \
  || { echo "build_interfaces: the ROS 2 generators are missing in $venv: pip install -r requirements-ros.txt" >&2; exit 1; }


# 1. point the wheels' CMake exports at this venv's headers (idempotent: the old path no longer occurs after)
py_inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$py" -c 'import numpy; print(numpy.get_include())')"
test -f "$py_inc/Python.h" || { echo "build_interfaces: Python.h not found in $py_inc (install the Python development headers)" >&2; exit 1; }
grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" "$venv/lib" 2>/dev/null \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" || true   # grep finds nothing once fixed

# 2. configure, build and install each package into the venv
build="$(mktemp -d "${TMPDIR:-/tmp}/ros_interfaces.XXXXXX")"
trap 'rm -rf "$build"' EXIT
export PATH="$venv/bin:$PATH" AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
for pkg in "${packages[@]}"; do
  start=$SECONDS
  echo "build_interfaces: building $pkg into $venv" >&2
  cmake -S "$here/interfaces/$pkg" -B "$build/$pkg" -G Ninja -Wno-dev \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
        -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" >"$build/$pkg.log" 2>&1 \
    && cmake --build "$build/$pkg" >>"$build/$pkg.log" 2>&1 \
    && cmake --install "$build/$pkg" >>"$build/$pkg.log" 2>&1 \
    || { tail -40 "$build/$pkg.log" >&2; echo "build_interfaces: building $pkg failed (log above)" >&2; exit 1; }
  echo "build_interfaces: $pkg built in $((SECONDS - start)) s" >&2
done

# 3. check that the built messages import next to rclpy, then stamp
"$py" -c "import rclpy, tf2_msgs.msg, grid_map_msgs.msg; tf2_msgs.msg.TFMessage(); grid_map_msgs.msg.GridMap()" \
  || { echo "build_interfaces: the built messages do not import" >&2; exit 1; }
echo "$hash" >"$stamp"
