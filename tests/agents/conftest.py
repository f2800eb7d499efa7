"""Fixtures of the LiveKit Agents end-to-end tests: LiveKit's real server, and this repository's
server (`avatar-supervisor serve`) with an account and a ready agent.

Run them inside the network namespace (libwebrtc ignores loopback, and media must stay on the
namespace's veth pair 10.99.0.1/10.99.0.2):

    bash scripts/netns_run.sh .setup/agents-venv/bin/python -m pytest -x -q tests/agents

Outside it (AVS_NETNS unset) every test is skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agents_support import free_tcp_port, netns_addrs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / ".setup"
LK_KEY = "devkey"
# 32+ characters: newer livekit-server versions refuse shorter secrets outside --dev.
LK_SECRET = "avs-agents-test-secret-0123456789abcdef"


def pytest_configure(config: pytest.Config) -> None:
    # Media timing is measured here (frame rates, interrupt latency): run this process and what it
    # starts (livekit-server, the avatars) ahead of a concurrent build on a small machine.
    # AVS_AGENTS_NICE=0 leaves the priority alone; without root the call fails and is ignored.
    if os.environ.get("AVS_NETNS") == "1":
        try:
            os.nice(int(os.environ.get("AVS_AGENTS_NICE", "-10")))
        except (OSError, ValueError):
            pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("AVS_NETNS") == "1":
        return
    skip = pytest.mark.skip(
        reason="tests/agents need real WebRTC inside the network namespace (libwebrtc ignores "
        "loopback): run `bash scripts/netns_run.sh .setup/agents-venv/bin/python -m pytest -x -q "
        "tests/agents` as root (AVS_NETNS is not set here)"
    )
    for item in items:
        # only what needs LiveKit's server; the plugin's HTTP tests run anywhere
        if "tests/agents" in str(item.fspath) and "livekit" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout} s ({last}):\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# LiveKit's server
# ---------------------------------------------------------------------------------------------


@dataclass
class LiveKit:
    url: str
    api_key: str
    api_secret: str
    log: Path


def _livekit_binary() -> Path:
    built = SETUP / "livekit-server" / "livekit-server"
    if built.exists():
        return built
    spare = Path("/tmp/lkbin/server")
    if spare.exists():
        return spare
    subprocess.run(["bash", str(ROOT / "scripts" / "setup_livekit_server.sh")], check=False)
    if built.exists():
        return built
    pytest.fail(
        "no livekit-server: .setup/livekit-server/livekit-server is missing and "
        "scripts/setup_livekit_server.sh could not build it (it needs Go and the Go module proxy)"
    )



def supervisor_env(**settings: str) -> dict[str, str]:
    """The environment avatar-supervisor runs with here (the tests' and load-tests/agents_bench.py's):
    what `make setup` installed, no LiveKit or database of the caller's, the generate limits off,
    and `settings` (AVS_… variables) on top."""
    env = dict(os.environ)
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "DATABASE_URL"):
        env.pop(var, None)
    env.update(
        {
            "ORT_DYLIB_PATH": str(SETUP / "libonnxruntime.so"),
            "AVS_MEDIA__FACE_MODEL": str(SETUP / "models" / "centerface.onnx"),
            "AVS_AGENTS__DEFAULT_AVATAR_IMAGE": str(SETUP / "default-avatar.png"),
            "AVS_LIVEKIT__FFI_LIBRARY": str(SETUP / "livekit" / "liblivekit_ffi.so"),
            "AVS_SESSIONS__ROOM_CHECK_INTERVAL_MS": "200",
            "AVS_LIMITS__GENERATE_PER_IP": "0",
            "AVS_LIMITS__GENERATE_PER_ACCOUNT": "0",
        }
    )
    env.update(settings)
    return env

@pytest.fixture(scope="session")
def livekit() -> Iterator[LiveKit]:
    binary = _livekit_binary()
    host, _ = netns_addrs()
    tmp = Path(tempfile.mkdtemp(prefix="avs-agents-lk-"))
    port = free_tcp_port(host)
    tcp_port = free_tcp_port(host)
    udp_start = 52000 + (os.getpid() % 50) * 100
    config = tmp / "livekit.yaml"
    config.write_text(
        f"""port: {port}
rtc:
  node_ip: {host}
  use_external_ip: false
  tcp_port: {tcp_port}
  port_range_start: {udp_start}
  port_range_end: {udp_start + 99}
keys:
  {LK_KEY}: {LK_SECRET}
logging:
  level: info
"""
    )
    log = tmp / "livekit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "--dev", "--bind", host, "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"http://{host}:{port}/", 20, proc, log, "livekit-server")
        yield LiveKit(url=f"ws://{host}:{port}", api_key=LK_KEY, api_secret=LK_SECRET, log=log)
    finally:
        _stop(proc)
        if os.environ.get("AVS_KEEP_LOGS"):
            print(f"livekit-server log: {log}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# This repository's server, with an account and a ready agent
# ---------------------------------------------------------------------------------------------


@dataclass
class Supervisor:
    base: str
    api_key: str
    agent_id: str
    log: Path
    proc: subprocess.Popen[bytes]

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"x-api-key": self.api_key, "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read())

    def log_tail(self, n: int = 60) -> str:
        return _tail(self.log, n)

    def generate_agent(self, name: str) -> None:
        """Generates an agent from the astronaut photo and waits (180 s at most) until it is ready;
        sets `agent_id`. Raises RuntimeError saying what went wrong otherwise."""
        image = base64.b64encode((SETUP / "images" / "astronaut.png").read_bytes()).decode()
        status, body = self.request(
            "POST",
            "/v1/agent/generate",
            {"image": image, "prompt": "You are a friendly assistant.", "name": name},
        )
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"generate: {status} {body}")
        agent_id = str(body["agent_id"])
        deadline = time.monotonic() + 180
        state: object = None
        while time.monotonic() < deadline:
            _, state = self.request("GET", f"/v1/agent/status/{agent_id}")
            data = state.get("data", {}) if isinstance(state, dict) else {}
            if data.get("status") in ("ready", "failed"):
                break
            time.sleep(0.25)
        data = state.get("data", {}) if isinstance(state, dict) else {}
        if data.get("status") != "ready":
            raise RuntimeError(f"agent generation did not reach ready: {state}")
        self.agent_id = agent_id


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def supervisor_binary() -> Path | None:
    override = os.environ.get("AVS_BIN")
    if override:
        return Path(override)
    for profile in ("release", "debug"):
        p = ROOT / "target" / profile / "avatar-supervisor"
        if p.exists():
            return p
    return None


@pytest.fixture(scope="session")
def supervisor() -> Iterator[Supervisor]:
    binary = supervisor_binary()
    if binary is None:
        pytest.fail(
            "no avatar-supervisor binary: build it first (`cargo build --release --bin "
            "avatar-supervisor` or a debug build; AVS_BIN=<path> overrides)"
        )
    for need in ("libonnxruntime.so", "models/centerface.onnx", "images/astronaut.png",
                 "livekit/liblivekit_ffi.so"):
        if not (SETUP / need).exists():
            pytest.fail(f".setup/{need} is missing: run `make setup`")
    tmp = Path(tempfile.mkdtemp(prefix="avs-agents-server-"))
    env = supervisor_env(
        AVS_SESSIONS__IDLE_TIMEOUT_SECONDS="600", AVS_BILLING__CHECKPOINT_SECONDS="1"
    )
    created = subprocess.run(
        [str(binary), "--data-dir", str(tmp), "account", "create", "--name", "agents-test",
         "--concurrency-limit", "4", "--minutes", "60", "--credits", "10000"],
        env=env, capture_output=True, cwd=ROOT, timeout=60,
    )
    if created.returncode != 0:
        pytest.fail(f"`account create` failed: {created.stderr.decode()[-2000:]}")
    api_key = json.loads(created.stdout.decode().splitlines()[0])["api_key"]

    log = tmp / "server.log"
    out_path = tmp / "server.stdout"
    with open(log, "wb") as err, open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "--data-dir", str(tmp), "serve", "--bind", "127.0.0.1:0",
             "--allow-private-urls"],
            env=env, stdout=out, stderr=err, cwd=ROOT,
        )
    try:
        base = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not base:
            if proc.poll() is not None:
                pytest.fail(f"avatar-supervisor serve exited with {proc.returncode}:\n{_tail(log)}")
            first = out_path.read_text(errors="replace").splitlines()
            if first and first[0].strip():
                base = first[0].strip().rsplit(" ", 1)[-1]
            else:
                time.sleep(0.1)
        if not base.startswith("http://"):
            pytest.fail(f"avatar-supervisor serve printed no base URL within 60 s:\n{_tail(log)}")
        _wait_http(base + "/healthz", 20, proc, log, "avatar-supervisor")

        sup = Supervisor(base=base, api_key=api_key, agent_id="", log=log, proc=proc)
        try:
            sup.generate_agent("agents-test")
        except RuntimeError as e:
            pytest.fail(str(e))
        yield sup
    finally:
        _stop(proc)
        if os.environ.get("AVS_KEEP_LOGS"):
            print(f"avatar-supervisor log: {log}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
