# The two commands of the README: `make run` and `make test`. Both run `make setup` first, which
# installs what is missing (idempotent: a second run takes well under a second).

SETUP := $(CURDIR)/.setup
export ORT_DYLIB_PATH := $(SETUP)/libonnxruntime.so
export AVS_AGENTS__DEFAULT_AVATAR_IMAGE := $(SETUP)/default-avatar.png
export AVS_MEDIA__FACE_MODEL := $(SETUP)/models/centerface.onnx
ARGS ?=

.PHONY: setup build run run-livekit test lint bench bench-media bench-lips bench-sessions bench-cluster bench-livekit load-test clean-data

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release --locked --bin avatar-supervisor

run: setup
	cargo run --release --locked --bin avatar-supervisor -- serve $(ARGS)

# LiveKit's own server (dev mode, built by make setup) and this server pointed at it.
run-livekit: setup
	@bash scripts/run_livekit.sh $(ARGS)

test: setup
	@bash scripts/test.sh

# Benchmarks print p50/p99 and throughput (release builds; see load-tests/).
bench: bench-media bench-sessions

bench-media: setup
	cargo run --release --locked --example media_bench -- --assets $(SETUP) --lipsync $(SETUP)/models/tiny_lipsync.onnx $(ARGS)

# How well the rendered lips say the words (issue 23): the face mesh on rendered frames against
# espeak-ng's phonemes, and the frame sheet.
bench-lips: setup
	cargo run --release --locked --example lips_bench -- --assets $(SETUP) --sheet load-tests/lip_sheet.png $(ARGS)

bench-sessions: setup
	cargo run --release --locked --example session_bench -- --assets $(SETUP) $(ARGS)

# Three nodes on one PostgreSQL and the local NATS: forwarded control round trips, fan-out, and the
# failover time of a fourth node (the release binary) killed with -9.
bench-cluster: setup
	cargo build --release --locked --bin avatar-supervisor --example cluster_bench
	target/release/examples/cluster_bench --assets $(SETUP) $(ARGS)

# The avatar for LiveKit Agents on LiveKit's real server (load-tests/agents_bench.py, in the network
# namespace, as root): start -> first frame at a subscriber, A/V offset, interrupt -> silence, CPU
# and memory per published session, sessions one node publishes at 25 fps.
bench-livekit: setup
	cargo build --release --locked --bin avatar-supervisor
	AVS_BIN=$(CURDIR)/target/release/avatar-supervisor bash scripts/netns_run.sh .setup/agents-venv/bin/python load-tests/agents_bench.py $(ARGS)

# N live sessions held then stopped, then SIGTERM, on SQLite and PostgreSQL (load-tests/RESULTS.md).
load-test: setup
	cargo build --release --locked --bin avatar-supervisor --example load_bench
	target/release/examples/load_bench --assets $(SETUP) $(ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
	python3 scripts/check_layers.py

clean-data:
	rm -rf data
