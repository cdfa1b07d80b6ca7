"""Scenario 7: the one-command try-out, deploy/local.sh, as a newcomer runs it.

It starts a search engine, Argilla 1.5.1 (through deploy/argilla-upstream.py) and the gateway on
loopback, prints fresh users once; the web app's login and the Python client work through it;
Ctrl-C stops everything it started; a second run reinstalls nothing. The run reuses the suite's
server environment and gateway binary (ARGILLA_LOCAL_VENV, ARGILLA_GATEWAY_BIN) and its own
folder and ports, so that it neither installs twice nor touches a developer's .try/.
"""

import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import argilla as rg
import requests

from conftest import free_ports

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


class Run:
    """deploy/local.sh running, its output collected line by line."""

    def __init__(self, folder, ports, host="127.0.0.1"):
        gateway, upstream, search = ports
        env = dict(
            os.environ,
            ARGILLA_LOCAL_DIR=folder,
            ARGILLA_LOCAL_HOST=host,
            ARGILLA_LOCAL_PORT=str(gateway),
            ARGILLA_LOCAL_UPSTREAM_PORT=str(upstream),
            ARGILLA_LOCAL_SEARCH_PORT=str(search),
            ARGILLA_LOCAL_VENV=os.path.dirname(os.path.dirname(os.environ["E2E_UVICORN"])),
            ARGILLA_GATEWAY_BIN=os.environ["E2E_GATEWAY_BIN"],
        )
        self.url = f"http://127.0.0.1:{gateway}"
        self.lines = []
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [os.path.join(ROOT, "deploy", "local.sh")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self):
        return "\n".join(self.lines)

    def wait_ready(self, seconds=180):
        deadline = time.monotonic() + seconds
        while not any("argilla-gateway is ready" in line for line in self.lines):
            assert self.process.poll() is None, f"local.sh stopped:\n{self.text()}"
            assert time.monotonic() < deadline, f"not ready in {seconds} s:\n{self.text()}"
            time.sleep(0.1)
        return time.monotonic() - self.started

    def pids(self):
        return [int(pid) for pid in re.findall(r"\(pid (\d+)\)", self.text())]

    def interrupt(self):
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_tryout_serves_the_web_app_login_and_the_client_then_stops_everything():
    folder = tempfile.mkdtemp(prefix="e2e-local-")
    ports = free_ports(3)
    run = Run(folder, ports)
    try:
        first = run.wait_ready()
        text = run.text()
        users = dict(re.findall(r"^\s+(\w+)\s+password (\S+)\s+api_key \S+$", text, re.M))
        keys = dict(re.findall(r"^\s+(\w+)\s+password \S+\s+api_key (\S+)$", text, re.M))
        assert set(users) == {"admin", "alice", "bob"}, text
        assert "data are LOST" in text or "LOST when this stops" in text, text
        assert "users.yml" in text

        # The web app's login, then the app's first call with the token.
        login = requests.post(
            run.url + "/api/security/token",
            data={"username": "alice", "password": users["alice"]},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        me = requests.get(run.url + "/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert me.json()["username"] == "alice"
        assert sorted(me.json()["workspaces"]) == ["alice", "shared", "team-a"]

        # The Python client logs a record and reads it back.
        rg.init(api_url=run.url, api_key=keys["alice"], workspace="team-a", timeout=30)
        result = rg.log(rg.TextClassificationRecord(text="tried in one command"), name="s7-local")
        assert (result.processed, result.failed) == (1, 0)
        assert len(rg.load("s7-local")) == 1
    finally:
        pids = run.pids()
        code = run.interrupt()
    assert code == 0, run.text()
    assert len(pids) == 3, run.text()
    assert not [pid for pid in pids if alive(pid)], f"left running: {pids}"
    assert "stopped everything it started" in run.text()

    # A second run: nothing installed again, the same users, ready in seconds.
    again = Run(folder, free_ports(3))
    try:
        second = again.wait_ready()
        text = again.text()
        assert "installing" not in text and "Users (printed only now" not in text, text
        assert "using" in text and "users.yml" in text, text
    finally:
        pids = again.pids()
        assert again.interrupt() == 0
    assert not [pid for pid in pids if alive(pid)]
    print(f"local.sh ready in {first:.1f} s (first run, users made), {second:.1f} s (second run)")
    assert second < 60, f"second run took {second:.1f} s"


def test_local_tryout_refuses_anything_but_loopback():
    folder = tempfile.mkdtemp(prefix="e2e-local-")
    run = Run(folder, free_ports(3), host="0.0.0.0")
    code = run.process.wait(timeout=30)
    run.reader.join(timeout=5)
    assert code != 0
    assert "is not a loopback address" in run.text(), run.text()
    assert not os.path.exists(os.path.join(folder, "users.yml"))
