"""Scenario 4: the upstream Argilla learns every users-file change while it runs.

run.sh runs this file against two stacks: the gateway in service mode (the upstream knows one
superuser, whose reach must grow and shrink with the file's workspaces) and in passthrough mode
(the upstream knows the file's users and their own keys). Either way the upstream is the real
Argilla 1.5.1 started by deploy/argilla-upstream.py, which keeps its users in step with the
gateway's file; nothing is restarted.

erin arrives with a workspace nobody named before (`team-new`) while alice's client works, and
must log and load records in it and in her own workspace within a second; alice and bob stay out
of it; erin's removal is applied at once, upstream too; bob's changed key works within a second;
alice's client sees no failed request while the file changes 50 times; a broken file changes
nothing upstream; Argilla's public default key and token secret open nothing.
"""

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import argilla as rg
import pytest
import requests
import yaml
from argilla.client.client import Argilla

from conftest import (
    FX,
    GATEWAY,
    UPSTREAM,
    USERS,
    argilla_error,
    basic_header,
    gw,
    poll_until,
    read_users_file,
    records,
    upstream,
    upstream_records,
    write_users_file,
)

MODE = FX["mode"]
NEW = FX["new_workspace"]
WITHIN = 1.0  # seconds from the write to the change being usable through gateway AND upstream
CHANGES = 50
STEADY_LIMIT = 240  # seconds: the steady client stops by itself after this, whatever happens
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LAUNCHER = os.path.join(ROOT, "deploy", "argilla-upstream.py")


@pytest.fixture(scope="module")
def original_users():
    entries = read_users_file()
    yield entries
    write_users_file(entries, atomic=True)
    # Later scenarios (the web app) use these users: wait until both sides have them back.
    restored, _ = poll_until(
        lambda: gw("GET", "/api/me", user="bob").status_code == 200
        and upstream("GET", "/api/me").status_code == 200
        and NEW not in upstream("GET", "/api/me").json()["workspaces"],
        5,
    )
    assert restored, "the original users file was not applied again"


def with_user(entries, entry):
    return [e for e in entries if e["username"] != entry["username"]] + [entry]


# The steady client runs in its own process: the Argilla client's progress display (rich) allows
# one live display per process, so two clients logging at once in one process fail each other.
STEADY_SCRIPT = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from argilla.client.client import Argilla
from conftest import GATEWAY, USERS, records

dataset, limit = sys.argv[2], float(sys.argv[3])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
deadline = time.monotonic() + limit

def say(error=None):
    print(json.dumps({"error": error}), flush=True)

try:
    client = Argilla(api_url=GATEWAY, api_key=USERS["alice"]["api_key"], workspace="team-a", timeout=30)
except Exception as e:
    say(f"init: {type(e).__name__}: {e}")
    sys.exit(1)
i = 0
while not stop.is_set() and time.monotonic() < deadline:
    try:
        result = client.log(records(3, f"steady-{i}"), name=dataset, verbose=False)
        assert (result.processed, result.failed) == (3, 0), result
        loaded = client.load(dataset, ids=[f"steady-{i}-0", f"steady-{i}-1"])
        assert len(loaded) == 2, f"loaded {len(loaded)} of 2 records"
        say()
    except Exception as e:
        say(f"round {i}: {type(e).__name__}: {e}")
    i += 1
"""


class SteadyClient:
    """alice's own Argilla client logging and loading in team-a in a loop, counting failures."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.rounds = 0
        self.failures = []
        self.process = None
        self.reader = None

    def _read(self):
        for line in self.process.stdout:
            try:
                error = json.loads(line)["error"]
            except (ValueError, KeyError):
                continue  # the client's own console output
            if error is None:
                self.rounds += 1
            else:
                self.failures.append(error)

    def __enter__(self):
        here = os.path.dirname(os.path.abspath(__file__))
        self.process = subprocess.Popen(
            [sys.executable, "-c", STEADY_SCRIPT, here, self.dataset, str(STEADY_LIMIT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        # Let it get going before the file changes.
        ok, _ = poll_until(lambda: self.rounds > 0 or self.failures or self.process.poll() is not None, 60)
        if not ok or self.failures or self.rounds == 0:
            self.__exit__()
            pytest.fail(f"the steady client did not start: {self.failures}")
        return self

    def __exit__(self, *exc):
        self.process.stdin.close()  # its signal to stop after the round in progress
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail("the steady client did not stop")
        self.reader.join(10)


def upstream_as(api_key, method, path, **kwargs):
    """A raw HTTP call straight to the upstream with this key (passthrough: a user's own)."""
    return requests.request(method, UPSTREAM + path, headers={"X-Argilla-Api-Key": api_key}, timeout=10, **kwargs)


def superuser_workspaces_upstream():
    """What the upstream's superuser reaches (service: the service user; passthrough: admin)."""
    return set(upstream("GET", "/api/me").json()["workspaces"])


def attempt(action):
    """Runs action(); (True, None) when it did not raise, else (False, the error)."""
    try:
        action()
        return True, None
    except Exception as e:  # noqa: BLE001 - the error is reported when time runs out
        return False, f"{type(e).__name__}: {e}"


def poll_action(action, seconds):
    """Repeats action() until it succeeds or `seconds` pass; returns (ok, elapsed, last error)."""
    last = [None]

    def check():
        ok, last[0] = attempt(action)
        return ok

    ok, elapsed = poll_until(check, seconds, interval=0.02)
    return ok, elapsed, last[0]


def log_one(api_key, workspace, dataset, record_id):
    client = Argilla(api_url=GATEWAY, api_key=api_key, workspace=workspace, timeout=10)
    record = rg.TextClassificationRecord(id=record_id, text=f"{record_id} is about apples")
    result = client.log(record, name=dataset, verbose=False)
    assert (result.processed, result.failed) == (1, 0), result


def report(name, values):
    """Writes a measured figure beside the screenshots (and prints it: pytest -s shows it)."""
    line = f"{MODE}: {name}: {values}"
    print(line)
    with open(os.path.join(FX.get("run_dir", "."), "upstream-reload-figures.txt"), "a") as f:
        f.write(line + "\n")


def test_upstream_reaches_what_the_gateway_reaches():
    # admin is a superuser in the gateway's file: the gateway gives it every workspace of the file.
    file_workspaces = set(gw("GET", "/api/me", user="admin").json()["workspaces"])
    assert {"team-a", "team-b", "team-c", "alice", "bob", "admin"} <= file_workspaces
    expected = file_workspaces | ({"gateway-service"} if MODE == "service" else set())
    # (within a second: scenario 3's last change may still be in the launcher's overlap)
    same, _ = poll_until(lambda: superuser_workspaces_upstream() == expected, WITHIN)
    assert same, (superuser_workspaces_upstream(), expected)
    if MODE == "passthrough":
        # The file's users themselves, with their own keys and workspaces.
        me = upstream_as(USERS["alice"]["api_key"], "GET", "/api/me")
        assert me.status_code == 200 and set(me.json()["workspaces"]) == {"team-a", "team-b", "alice"}


def test_public_defaults_open_nothing_upstream():
    username = "admin" if MODE == "passthrough" else "gateway-service"
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    claims = json.dumps({"sub": username, "exp": int(time.time()) + 3600}).encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(b"secret", header + b"." + payload, hashlib.sha256).digest())
    token = (header + b"." + payload + b"." + signature.rstrip(b"=")).decode()
    cases = [
        ("default key", {"X-Argilla-Api-Key": "argilla.apikey"}),
        ("old default key", {"X-Rubrix-Api-Key": "rubrix.apikey"}),
        ("old default key, new header", {"X-Argilla-Api-Key": "rubrix.apikey"}),
        ("token signed with `secret`", {"Authorization": f"Bearer {token}"}),
    ]
    for case, headers in cases:
        r = requests.get(UPSTREAM + "/api/me", headers=headers, timeout=10)
        assert r.status_code == 401, f"{case}: upstream answered {r.status_code}"
    login = requests.post(UPSTREAM + "/api/security/token", data={"username": "argilla", "password": "1234"},
                          timeout=10)
    assert login.status_code == 401, f"default login: upstream answered {login.status_code}"


def test_new_user_and_workspace_usable_within_a_second(original_users):
    erin = USERS["erin"]
    assert NEW not in superuser_workspaces_upstream()
    with SteadyClient(f"s4-steady-new-{MODE}") as steady:
        written = time.monotonic()
        write_users_file(with_user(original_users, erin["entry"]), atomic=False)
        ok, _, error = poll_action(lambda: log_one(erin["api_key"], NEW, "s4-erin-team", "erin-team-0"), WITHIN)
        new_elapsed = time.monotonic() - written
        assert ok, f"erin could not log into {NEW} {new_elapsed:.2f}s after being added: {error}"
        ok, _, error = poll_action(lambda: log_one(erin["api_key"], None, "s4-erin-own", "erin-own-0"), WITHIN)
        own_elapsed = time.monotonic() - written
        assert ok, f"erin could not log into her own workspace {own_elapsed:.2f}s after being added: {error}"
        assert own_elapsed <= WITHIN, f"erin logged into both workspaces only {own_elapsed:.2f}s after the write"
        report("new user: logged in the new workspace after (s)", round(new_elapsed, 3))
        report("new user: logged in both workspaces after (s)", round(own_elapsed, 3))

        # Now the real work, in both workspaces, checked upstream.
        for workspace, dataset in ((NEW, "s4-erin-team"), ("erin", "s4-erin-own")):
            client = Argilla(api_url=GATEWAY, api_key=erin["api_key"], workspace=workspace, timeout=30)
            result = client.log(records(40, f"erin-{workspace}"), name=dataset, verbose=False)
            assert (result.processed, result.failed) == (40, 0)
            assert len(client.load(dataset)) == 41
            assert len(client.load(dataset, query="apples")) == 15  # 14 of the 40, plus the first
            assert upstream_records(dataset, workspace, limit=0)["total"] == 41
    assert steady.failures == [], steady.failures
    assert steady.rounds > 0


def test_existing_users_stay_out_of_the_new_workspace():
    assert NEW in superuser_workspaces_upstream()
    for user in ("alice", "bob"):
        with pytest.raises(Exception, match=f"^Wrong provided workspace {NEW}$"):
            rg.init(api_url=GATEWAY, api_key=USERS[user]["api_key"], workspace=NEW, timeout=10)
        r = gw("GET", "/api/datasets/s4-erin-team", user=user, params={"workspace": NEW})
        assert r.status_code == 404 and argilla_error(r)[0] == "EntityNotFoundError", (user, r.text)
        r = gw("POST", "/api/datasets/s4-erin-team/TextClassification:search", user=user,
               headers={"X-Argilla-Workspace": NEW}, json={})
        assert r.status_code == 404, (user, r.status_code)
        if MODE == "passthrough":
            # The upstream agrees on its own: it knows alice and bob with their own workspaces.
            r = upstream_as(USERS[user]["api_key"], "GET", "/api/datasets/s4-erin-team", params={"workspace": NEW})
            assert r.status_code == 404, r.text
            assert argilla_error(r) == ("EntityNotFoundError", {"name": NEW, "type": "Workspace"}), r.text


def test_changed_key_works_within_a_second(original_users):
    bob = dict(next(e for e in original_users if e["username"] == "bob"))
    old_key = bob["api_key"]
    bob["api_key"] = "bob-renewed." + os.urandom(16).hex()
    current = read_users_file()
    written = time.monotonic()
    write_users_file(with_user(current, bob), atomic=True)
    ok, _, error = poll_action(lambda: log_one(bob["api_key"], None, "s4-bob-key", "bob-key-0"), WITHIN)
    elapsed = time.monotonic() - written
    assert ok, f"bob's new key not usable {elapsed:.2f}s after the change: {error}"
    report("changed key: usable after (s)", round(elapsed, 3))
    assert gw("GET", "/api/me", headers={"X-Argilla-Api-Key": old_key}).status_code == 401
    if MODE == "passthrough":
        new = upstream_as(bob["api_key"], "GET", "/api/me")
        assert new.status_code == 200
        # The old key stays known upstream for the launcher's overlap (0.3 s), then no more.
        gone, _ = poll_until(lambda: upstream_as(old_key, "GET", "/api/me").status_code == 401, WITHIN)
        assert gone, "bob's old key still known upstream a second after the change"
    # Back to the original key, for the scenarios after this one.
    write_users_file(with_user(current, next(e for e in original_users if e["username"] == "bob")), atomic=True)
    ok, _, error = poll_action(lambda: log_one(old_key, None, "s4-bob-key", "bob-key-1"), WITHIN)
    assert ok, f"bob's original key not usable again: {error}"


def test_no_failed_request_while_a_key_changes_20_times(original_users):
    # bob keeps working with Basic credentials while his API key is rotated: in passthrough mode
    # the gateway forwards each request with his key of the moment, so gateway and upstream must
    # never disagree about it, whichever of the two applies a change first.
    bob = dict(next(e for e in original_users if e["username"] == "bob"))
    current = read_users_file()
    stop = threading.Event()
    results = {"ok": 0, "failed": []}

    def steady():
        session = requests.Session()
        headers = {"Authorization": basic_header("bob")}
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            r = session.get(GATEWAY + "/api/datasets/s4-bob-key", headers=headers, timeout=10)
            if r.status_code == 200:
                results["ok"] += 1
            else:
                results["failed"].append(f"{r.status_code} {r.text[:200]}")

    thread = threading.Thread(target=steady, daemon=True)
    thread.start()
    try:
        for i in range(20):
            key = f"bob-rotated-{i}." + os.urandom(8).hex()
            write_users_file(with_user(current, dict(bob, api_key=key)), atomic=i % 2 == 0)
            ok, _, error = poll_action(lambda: log_one(key, None, "s4-bob-key", f"bob-rotated-{i}"), WITHIN)
            assert ok, f"rotation {i}: the new key not usable within a second: {error}"
    finally:
        stop.set()
        thread.join(30)
        write_users_file(current, atomic=True)
    assert results["failed"] == [], results["failed"][:5]
    assert results["ok"] >= 20, results
    report("key rotated 20 times: Basic requests during it, failures", (results["ok"], len(results["failed"])))
    ok, _, error = poll_action(lambda: log_one(bob["api_key"], None, "s4-bob-key", "bob-key-2"), WITHIN)
    assert ok, f"bob's original key not usable again: {error}"


def test_removed_user_is_refused_at_once(original_users):
    erin = USERS["erin"]
    assert gw("GET", "/api/me", user="erin").status_code == 200
    written = time.monotonic()
    write_users_file(original_users, atomic=True)

    def gone_everywhere():
        if gw("GET", "/api/me", user="erin").status_code != 401:
            return False
        r = upstream("GET", "/api/datasets/s4-erin-team", params={"workspace": NEW})
        if r.status_code != 404 or argilla_error(r) != ("EntityNotFoundError", {"name": NEW, "type": "Workspace"}):
            return False
        if MODE == "passthrough":
            r = upstream_as(erin["api_key"], "GET", "/api/me")
            return r.status_code == 401
        return True

    gone, _ = poll_until(gone_everywhere, WITHIN, interval=0.02)
    elapsed = time.monotonic() - written
    assert gone, f"erin (or her workspace, upstream) still there {elapsed:.2f}s after her removal"
    report("removed user: refused by gateway and upstream after (s)", round(elapsed, 3))
    with pytest.raises(Exception):
        rg.init(api_url=GATEWAY, api_key=erin["api_key"], workspace=NEW, timeout=10)
    assert gw("GET", "/api/me", user="alice").status_code == 200


def test_disabled_user_opens_nothing_upstream(original_users):
    dave = USERS["dave"]

    def upstream_me():
        return upstream_as(dave["api_key"], "GET", "/api/me").status_code

    # An e-mail the gateway takes but Argilla's own pattern does not must not stop the file upstream.
    write_users_file(original_users + [dict(dave["entry"], email="dave@localhost")], atomic=True)
    def known_everywhere():
        return "dave" in superuser_workspaces_upstream() and gw("GET", "/api/me", user="dave").status_code == 200

    known, _ = poll_until(known_everywhere, WITHIN)
    assert known, "dave was not applied"
    if MODE == "passthrough":
        assert upstream_me() == 200
    write_users_file(original_users + [dict(dave["entry"], disabled=True)], atomic=True)

    def refused_everywhere():
        # The gateway answers as Argilla does for a disabled user (400 InactiveUserError); the
        # upstream, which Argilla 1.5 would let in with the key, no longer knows it (401).
        r = gw("GET", "/api/me", user="dave")
        inactive = r.status_code == 400 and argilla_error(r)[0] == "InactiveUserError"
        return inactive and (MODE == "service" or upstream_me() == 401)

    refused, elapsed = poll_until(refused_everywhere, WITHIN)
    assert refused, f"disabled dave still accepted {elapsed:.2f}s after the change"
    # Disabled, not removed: his workspace stays known upstream, as to the gateway's superusers.
    assert "dave" in superuser_workspaces_upstream()
    assert "dave" in gw("GET", "/api/me", user="admin").json()["workspaces"]
    write_users_file(original_users, atomic=True)


def test_steady_client_sees_no_failure_during_50_changes(original_users):
    dave = USERS["dave"]["entry"]
    latencies = []
    with SteadyClient(f"s4-steady-churn-{MODE}") as steady:
        for i in range(CHANGES):
            workspace = f"churn-{i}"
            entry = dict(dave, workspaces=[workspace], full_name=f"Dave {i}")
            written = time.monotonic()
            # Alternate the two ways files are written: in place (`cat >`) and by rename (editors).
            write_users_file(original_users + [entry], atomic=i % 2 == 0)

            def applied():
                me = gw("GET", "/api/me", user="dave")
                at_gateway = me.status_code == 200 and workspace in me.json()["workspaces"]
                return at_gateway and workspace in superuser_workspaces_upstream()

            ok, elapsed = poll_until(applied, WITHIN, interval=0.01)
            assert ok, f"change {i}: not applied by gateway and upstream {elapsed:.2f}s after the write"
            latencies.append(time.monotonic() - written)
        rounds_during = steady.rounds
    assert steady.failures == [], steady.failures
    assert rounds_during >= 5, f"the steady client made only {rounds_during} rounds during the changes"
    report(
        f"{CHANGES} changes applied by gateway and upstream (s): median, max",
        (round(statistics.median(latencies), 3), round(max(latencies), 3)),
    )
    report("steady client rounds (log 3 + load 2) during the changes, failures", (rounds_during, len(steady.failures)))
    # The last change is usable as such: dave works in his last workspace.
    ok, _, error = poll_action(lambda: log_one(dave["api_key"], f"churn-{CHANGES - 1}", "s4-dave", "dave-0"), WITHIN)
    assert ok, error


def test_kubernetes_configmap_swap(original_users):
    # A ConfigMap volume: users file -> ..data/<file>, and ..data -> ..<timestamp>/ swapped by a
    # rename of a new symlink. The file itself never changes; gateway and upstream must follow.
    path = FX["gateway_users_file"]
    folder, name = os.path.split(path)
    carol = USERS["carol"]

    def publish(version, entries):
        target = os.path.join(folder, f"..2026_12_02_{version}")
        os.mkdir(target)
        with open(os.path.join(target, name), "w") as f:
            f.write(yaml.safe_dump(entries, sort_keys=False))
        os.symlink(os.path.basename(target), os.path.join(folder, "..data_tmp"))
        os.replace(os.path.join(folder, "..data_tmp"), os.path.join(folder, "..data"))

    def carol_everywhere():
        return gw("GET", "/api/me", user="carol").status_code == 200 and "carol" in superuser_workspaces_upstream()

    try:
        publish(1, original_users)
        os.symlink(os.path.join("..data", name), path + ".link")
        os.replace(path + ".link", path)
        written = time.monotonic()
        publish(2, original_users + [carol["entry"]])
        ok, _ = poll_until(carol_everywhere, WITHIN, interval=0.02)
        assert ok, f"the ..data swap adding carol not applied on both sides {time.monotonic() - written:.2f}s later"
        written = time.monotonic()
        publish(3, original_users)
        gone, _ = poll_until(lambda: gw("GET", "/api/me", user="carol").status_code == 401
                             and "carol" not in superuser_workspaces_upstream(), WITHIN, interval=0.02)
        assert gone, f"the ..data swap removing carol not applied on both sides {time.monotonic() - written:.2f}s later"
    finally:
        write_users_file(original_users, atomic=True)  # a regular file again, replacing the link
        for entry in os.listdir(folder):
            if entry.startswith("..2026_12_02_"):
                shutil.rmtree(os.path.join(folder, entry))
            elif entry.startswith("..data"):
                os.unlink(os.path.join(folder, entry))


def test_unusable_file_keeps_the_last_good_users(original_users):
    log_path = FX["upstream_log"]

    def refusals():
        with open(log_path, errors="replace") as f:
            return f.read().count("users file not applied")

    before = refusals()
    path = FX["gateway_users_file"]
    with open(path, "w") as f:
        f.write("- username: [broken\n")
    logged, _ = poll_until(lambda: refusals() > before, 3)
    assert logged, "the upstream launcher did not log why it refused the broken file"
    assert superuser_workspaces_upstream() >= {"team-a", "team-b", "team-c", "alice", "bob", "admin"}
    client = Argilla(api_url=GATEWAY, api_key=USERS["alice"]["api_key"], workspace="team-a", timeout=10)
    result = client.log(records(2, "after-broken"), name="s4-after-broken", verbose=False)
    assert (result.processed, result.failed) == (2, 0)
    write_users_file(original_users + [USERS["carol"]["entry"]], atomic=True)
    ok, _ = poll_until(lambda: "carol" in superuser_workspaces_upstream(), WITHIN)
    assert ok, "a good file after a broken one was not applied upstream"
    write_users_file(original_users, atomic=True)


def test_upstream_log_holds_no_secret():
    with open(FX["upstream_log"], errors="replace") as f:
        log = f.read()
    assert "upstream users reloaded" in log
    secrets = [FX["upstream_api_key"]]
    for user in USERS.values():
        secrets += [user["api_key"], user["password"], user["entry"]["hashed_password"]]
    leaked = [s[:6] + "…" for s in secrets if s in log]
    assert leaked == [], f"secrets in the upstream log: {leaked}"


if MODE == "service":
    # Independent of the mode: run once, on the service stack.

    def _launcher():
        spec = importlib.util.spec_from_file_location("argilla_upstream", LAUNCHER)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    HASH = USERS["alice"]["entry"]["hashed_password"]
    OK = f'- username: alice\n  hashed_password: "{HASH}"\n  api_key: k1\n'
    # (case, users file content): the launcher must accept exactly what the gateway accepts.
    READ_CASES = [
        ("valid users", OK + f'- username: bob\n  hashed_password: "{HASH}"\n  api_key: k2\n  workspaces: []\n'
         f'- username: admin\n  hashed_password: "{HASH}"\n  api_key: k3\n  workspaces: null\n  email: a@b.c\n'),
        ("empty list", "[]\n"),
        ("empty file", ""),
        ("only comments", "# nobody\n"),
        ("a mapping", "username: alice\n"),
        ("unknown field", OK + "  disable: true\n"),
        ("uppercase username", OK.replace("username: alice", "username: Alice")),
        ("username starting with -", OK.replace("username: alice", 'username: "-alice"')),
        ("username null", OK.replace("username: alice", "username: null")),
        ("username `no` (text in YAML 1.2)", OK.replace("username: alice", "username: no")),
        ("not a bcrypt hash", OK.replace(f'"{HASH}"', "plain")),
        ("$2x$ hash", OK.replace(f'"{HASH}"', '"' + "$2x$" + HASH[4:] + '"')),
        ("short hash", OK.replace(f'"{HASH}"', '"' + HASH[:-1] + '"')),
        ("api_key a number", OK.replace("api_key: k1", "api_key: 12345")),
        ("api_key hex number", OK.replace("api_key: k1", "api_key: 0x1F")),
        ("api_key empty", OK.replace("api_key: k1", 'api_key: ""')),
        # Scalars YAML 1.1 (PyYAML) and YAML 1.2 (the gateway's serde_yaml) read differently.
        ("api_key 1e3 (a number in YAML 1.2)", OK.replace("api_key: k1", "api_key: 1e3")),
        ("api_key 0o17 (a number in YAML 1.2)", OK.replace("api_key: k1", "api_key: 0o17")),
        ("api_key -.5", OK.replace("api_key: k1", "api_key: -.5")),
        ("api_key .NaN", OK.replace("api_key: k1", "api_key: .NaN")),
        ("api_key 1_000 (text in YAML 1.2)", OK.replace("api_key: k1", "api_key: 1_000")),
        ("api_key 0777 (text in YAML 1.2)", OK.replace("api_key: k1", "api_key: 0777")),
        ("api_key 1:20 (text in YAML 1.2)", OK.replace("api_key: k1", "api_key: 1:20")),
        ("merge key", f'- &base\n  username: alice\n  hashed_password: "{HASH}"\n  api_key: k1\n'
         "- <<: *base\n  username: bob\n  api_key: k2\n"),
        ("anchor and alias of a list", OK + "  workspaces: &teams [team-a]\n"
         + OK.replace("alice", "bob").replace("k1", "k2") + "  workspaces: *teams\n"),
        ("api_key control character", OK.replace("api_key: k1", 'api_key: "a\\x01b"')),
        ("missing api_key", OK.replace("  api_key: k1\n", "")),
        ("duplicate username", OK + OK.replace("k1", "k2")),
        ("duplicate api_key", OK + OK.replace("alice", "bob")),
        ("duplicate field", OK + "  api_key: k9\n"),
        ("workspace a boolean", OK + "  workspaces: [true]\n"),
        ("workspace `yes` (text in YAML 1.2)", OK + "  workspaces: [yes]\n"),
        ("workspace that looks like a date", OK + "  workspaces: [2024-01-01]\n"),
        ("workspace with a space", OK + '  workspaces: ["team a"]\n'),
        ("workspaces a string", OK + "  workspaces: team-a\n"),
        ("disabled a string", OK + '  disabled: "yes"\n'),
        ("superuser `yes`", OK + "  superuser: yes\n"),
        ("email without @", OK + "  email: alice.example.com\n"),
        ("email null", OK + "  email: null\n"),
        ("full name a number", OK + "  full_name: 1.5\n"),
        ("invalid YAML", "- username: [broken\n"),
    ]

    @pytest.mark.parametrize("case,content", READ_CASES, ids=[c for c, _ in READ_CASES])
    def test_launcher_reads_the_users_file_like_the_gateway(case, content):
        launcher = _launcher()
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "users.yml")
            with open(path, "w") as f:
                f.write(content)
            env = dict(os.environ, ARGILLA_LOCAL_AUTH_USERS_DB_FILE=path, NO_COLOR="1")
            env.pop("ARGILLA_GATEWAY_CONFIG", None)
            gateway = subprocess.run([os.environ["E2E_GATEWAY_BIN"], "check"], env=env, cwd=folder,
                                     capture_output=True, text=True, timeout=30)
            assert gateway.returncode in (0, 1), gateway.stderr
            try:
                launcher.parse_users(path, launcher.read_users_file(path))
                launcher_ok, why = True, ""
            except launcher.UsersFileError as e:
                launcher_ok, why = False, str(e)
        gateway_ok = gateway.returncode == 0
        assert launcher_ok == gateway_ok, (
            f"{case}: gateway {'accepts' if gateway_ok else 'refuses'} "
            f"({gateway.stdout[-300:]}{gateway.stderr[-300:]}), "
            f"launcher {'accepts' if launcher_ok else 'refuses'} ({why})"
        )
