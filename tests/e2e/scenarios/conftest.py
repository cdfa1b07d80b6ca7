"""Shared helpers for the Python-client scenarios.

run.sh starts osmem-server, the upstream Argilla 1.5.1 through deploy/argilla-upstream.py (which
gives it its users from the gateway's users file) and the gateway, then writes the stack's fixture
(URLs, users, secrets) to the JSON file named by E2E_FIXTURE. In the gateway's service mode the
upstream knows one superuser, `gateway-service`, whose key only the gateway and these helpers'
upstream checks know; in passthrough mode (scenario 4 only) it knows the file's users, and the
upstream checks use admin's key. Scenario 5 starts
a stack of its own beside it (E2E_UVICORN, E2E_OSMEM_BIN, E2E_GATEWAY_BIN, E2E_LOGS_DIR).
"""

import base64
import json
import os
import socket
import time

import argilla as rg
import pytest
import requests
import yaml

GATEWAY_TIMEOUT = 30

# Lines a scenario wants in the closing summary (scenario 5 lists the routes it compared).
SUMMARY_LINES = []


def _load_fixture():
    path = os.environ.get("E2E_FIXTURE")
    if not path:
        raise RuntimeError("E2E_FIXTURE is not set: run the suite with tests/e2e/run.sh")
    with open(path) as f:
        return json.load(f)


FX = _load_fixture()
GATEWAY = FX["gateway_url"]
UPSTREAM = FX["upstream_url"]
USERS = FX["users"]


@pytest.fixture(scope="session")
def fx():
    return FX


def init(user, workspace=None, **kwargs):
    """rg.init through the gateway with the user's API key."""
    rg.init(api_url=GATEWAY, api_key=USERS[user]["api_key"], workspace=workspace, timeout=GATEWAY_TIMEOUT, **kwargs)
    return rg.active_client()


def basic_header(user, password=None):
    raw = f"{user}:{password if password is not None else USERS[user]['password']}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def records(n, prefix):
    """n text-classification records; every third one mentions apples, the others oranges."""
    return [
        rg.TextClassificationRecord(
            id=f"{prefix}-{i}",
            text=f"{prefix} record {i} is about {'apples' if i % 3 == 0 else 'oranges'}",
            prediction=[("fruit", 0.8), ("other", 0.2)],
            prediction_agent="e2e-seed",
            metadata={"i": i},
        )
        for i in range(n)
    ]


def gw(method, path, user=None, headers=None, **kwargs):
    """A raw HTTP call through the gateway, with the user's API key unless headers say otherwise."""
    all_headers = {}
    if user is not None:
        all_headers["X-Argilla-Api-Key"] = USERS[user]["api_key"]
    all_headers.update(headers or {})
    return requests.request(method, GATEWAY + path, headers=all_headers, timeout=GATEWAY_TIMEOUT, **kwargs)


def upstream(method, path, **kwargs):
    """A raw HTTP call straight to the upstream as its superuser (to check effects)."""
    headers = {"X-Argilla-Api-Key": FX["upstream_api_key"]}
    return requests.request(method, UPSTREAM + path, headers=headers, timeout=GATEWAY_TIMEOUT, **kwargs)


def upstream_dataset(name, workspace):
    """The upstream's view of a dataset (dict), or None when it does not exist there."""
    r = upstream("GET", f"/api/datasets/{name}", params={"workspace": workspace})
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def upstream_records(name, workspace, query=None, limit=1000):
    """Records of a text-classification dataset as the upstream stores them."""
    r = upstream(
        "POST",
        f"/api/datasets/{name}/TextClassification:search",
        params={"workspace": workspace, "limit": limit},
        json={"query": query or {}},
    )
    r.raise_for_status()
    return r.json()


def argilla_error(response):
    """(code suffix, params) of an Argilla error body."""
    detail = response.json()["detail"]
    return detail["code"].split("::")[-1], detail.get("params", {})


def read_users_file():
    with open(FX["gateway_users_file"]) as f:
        return yaml.safe_load(f)


def write_users_file(entries, atomic):
    """Rewrites the gateway's users.yml in place (like `cat >`) or by rename (like most editors)."""
    path = FX["gateway_users_file"]
    text = yaml.safe_dump(entries, sort_keys=False)
    if atomic:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(text)


def free_ports(n):
    """n free TCP ports on 127.0.0.1 (for stacks a scenario starts itself)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def poll_until(check, seconds, interval=0.05):
    """Calls check() until it returns truthy or `seconds` pass; returns (result, elapsed)."""
    start = time.monotonic()
    while True:
        result = check()
        elapsed = time.monotonic() - start
        if result or elapsed >= seconds:
            return result, elapsed
        time.sleep(interval)


def pytest_collection_finish(session):
    # A run that collects nothing must fail (pytest exits 5); also insist on every scenario file
    # (the passthrough stack runs scenario 4 only).
    files = {os.path.basename(str(item.fspath)) for item in session.items}
    expected = {
        "test_1_api_key.py",
        "test_2_basic_auth.py",
        "test_3_hot_reload.py",
        "test_4_upstream_reload.py",
        "test_5_identity_rules.py",
        "test_6_upstream_connections.py",
        "test_7_local_tryout.py",
    }
    if FX.get("mode") == "passthrough":
        expected = {"test_4_upstream_reload.py"}
    missing = expected - files
    if missing and not session.config.getoption("keyword") and not session.config.getoption("markexpr"):
        raise pytest.UsageError(f"e2e scenarios missing from the collection: {sorted(missing)}")


def pytest_terminal_summary(terminalreporter):
    if SUMMARY_LINES:
        terminalreporter.section("routes compared")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)
        folder = os.environ.get("E2E_ARTIFACTS_DIR")
        if folder:
            with open(os.path.join(folder, "identity-routes.txt"), "w") as f:
                f.write("\n".join(SUMMARY_LINES) + "\n")
