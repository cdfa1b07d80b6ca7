"""The docker-compose stack (deploy/compose-test.sh up), driven from the host as a user would.

.ci/compose-test.sh writes the users folder and the fixture (COMPOSE_TEST_FIXTURE), brings the
stack up, runs this file with the e2e suite's client venv (the real Argilla 1.5.1 client), and
takes the stack down. The tests run in file order: the users-file change comes before the
gateway restart, which must keep every user, the new one included.
"""

import base64
import json
import os
import socket
import subprocess
import time

import argilla as rg
import pytest
import requests
import yaml

FX = json.load(open(os.environ["COMPOSE_TEST_FIXTURE"]))
GATEWAY = FX["gateway_url"]
USERS = FX["users"]  # name -> {"api_key", "password", "workspaces"}
USERS_FILE = os.path.join(FX["users_dir"], "users.yml")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WITHIN = 1.0  # seconds from the host's write to the change being usable through the gateway
IMAGE_LIMIT = 20_000_000  # bytes, the gateway image as an image
DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"  # as compose-test.sh


def compose(*args, check=True):
    cmd = [
        "docker-compose", "--env-file", FX["empty_env"], "-p", FX["project"],
        "--project-directory", ROOT,
        "-f", os.path.join(ROOT, "docker-compose.yml"),
        "-f", os.path.join(ROOT, "deploy", "compose-test", "docker-compose.test.yml"),
        *args,
    ]
    env = dict(os.environ)
    with open(os.path.join(ROOT, ".compose-test", "stack.env")) as f:
        env.update(line.strip().split("=", 1) for line in f if "=" in line)
    env.update(
        ARGILLA_GATEWAY_USERS_DIR=FX["users_dir"],
        ARGILLA_GATEWAY_UPSTREAM_API_KEY=FX["upstream_api_key"],
        ARGILLA_GATEWAY_PORT=str(FX["gateway_port"]),
    )
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120, env=env)


def docker(*args):
    out = subprocess.run([DOCKER, *args], check=True, capture_output=True, text=True, timeout=60)
    return out.stdout


def inspect(service):
    cid = compose("ps", "-q", service).stdout.strip()
    assert cid, f"no container for {service}"
    return json.loads(docker("inspect", cid))[0]


def basic(user):
    raw = f"{user}:{USERS[user]['password']}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def me(user=None, headers=None):
    if user is not None:
        headers = {"X-Argilla-Api-Key": USERS[user]["api_key"]}
    return requests.get(GATEWAY + "/api/me", headers=headers, timeout=10)


def records(n, prefix):
    return [rg.TextClassificationRecord(text=f"{prefix} record {i}", id=i) for i in range(n)]


def wait_healthy(service, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = inspect(service)["State"]
        if state["Status"] == "running" and state.get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(0.2)
    pytest.fail(f"{service} not healthy after {seconds}s")


def test_compose_ps_every_service_healthy():
    out = compose("ps").stdout
    print(out)
    for service in ("elasticsearch", "argilla", "gateway"):
        lines = [line for line in out.splitlines() if line.startswith(f"{FX['project']}_{service}_")]
        assert len(lines) == 1, (service, out)
        assert "(healthy)" in lines[0], lines[0]
        assert inspect(service)["State"]["Health"]["Status"] == "healthy"


def test_search_engine_is_the_emulator():
    # The override's osmem-server stands in for Elasticsearch, from the pinned test dependency.
    es = inspect("elasticsearch")
    assert es["Path"] == "/usr/local/bin/osmem-server", es["Path"]


def test_client_with_api_key_logs_and_loads():
    rg.init(api_url=GATEWAY, api_key=USERS["alice"]["api_key"], workspace="team-a", timeout=30)
    assert rg.get_workspace() == "team-a"
    result = rg.log(records(30, "apples"), name="compose-alice")
    assert (result.processed, result.failed) == (30, 0)
    assert len(rg.load("compose-alice")) == 30
    assert len(rg.load("compose-alice", query="apples", limit=5)) == 5


def test_client_with_basic_credentials():
    # Argilla 1.5.1's client always sends its key headers: empty ones let Basic through.
    rg.init(
        api_url=GATEWAY,
        workspace="team-a",
        extra_headers={"Authorization": basic("alice"), "X-Argilla-Api-Key": "", "X-Rubrix-Api-Key": ""},
        timeout=30,
    )
    assert rg.active_client().user.username == "alice"
    assert len(rg.load("compose-alice")) == 30
    r = me(headers={"Authorization": basic("alice")})
    assert r.status_code == 200 and r.json()["username"] == "alice", r.text
    wrong = "Basic " + base64.b64encode(b"alice:not-her-password").decode()
    assert me(headers={"Authorization": wrong}).status_code == 401


@pytest.mark.parametrize("user,workspace", [("alice", "team-b"), ("bob", "team-a"), ("bob", "alice")])
def test_foreign_workspace_is_refused(user, workspace):
    with pytest.raises(Exception, match=f"^Wrong provided workspace {workspace}$"):
        rg.init(api_url=GATEWAY, api_key=USERS[user]["api_key"], workspace=workspace, timeout=30)
    # A client that sends the header anyway learns nothing of the other team's dataset.
    r = requests.get(
        GATEWAY + "/api/datasets/compose-alice",
        headers={"X-Argilla-Api-Key": USERS[user]["api_key"], "X-Argilla-Workspace": workspace},
        timeout=10,
    )
    assert r.status_code == 404, r.text
    assert "apples" not in r.text


def test_unknown_key_is_refused():
    assert me(headers={"X-Argilla-Api-Key": "not-a-key"}).status_code == 401


def test_upstream_and_search_are_not_reachable_from_the_host():
    for service in ("argilla", "elasticsearch"):
        c = inspect(service)
        published = {p: b for p, b in (c["NetworkSettings"]["Ports"] or {}).items() if b}
        assert published == {}, (service, published)
        assert list(c["NetworkSettings"]["Networks"]) == [FX["project"] + "_backend"], service
        # Nothing answers on the host's loopback at the services' ports (the gateway's is elsewhere).
        for port in (6900, 9200):
            if port == int(FX["gateway_port"]):
                continue
            with socket.socket() as s:
                s.settimeout(1)
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"something listens on 127.0.0.1:{port}"
        # Its only route out is the internal backend bridge (Docker drops what would leave it).
        backend_gateway = c["NetworkSettings"]["Networks"][FX["project"] + "_backend"]["Gateway"]
        routes = docker("exec", c["Id"], "cat", "/proc/net/route").splitlines()[1:]
        defaults = [line.split()[2] for line in routes if line.split()[1] == "00000000"]
        as_hex = "".join(f"{int(part):02X}" for part in reversed(backend_gateway.split(".")))
        assert set(defaults) <= {as_hex}, (service, backend_gateway, routes)
    backend = json.loads(docker("network", "inspect", FX["project"] + "_backend"))[0]
    assert backend["Internal"] is True
    gateway = inspect("gateway")
    bindings = gateway["NetworkSettings"]["Ports"]["6900/tcp"]
    assert {b["HostPort"] for b in bindings} == {str(FX["gateway_port"])}, bindings


def test_gateway_runs_as_non_root_with_a_read_only_users_folder():
    c = inspect("gateway")
    assert c["Config"]["User"] == "65532:65532"
    with open(f"/proc/{c['State']['Pid']}/status") as f:
        ids = {line.split(":")[0]: line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))}
    assert ids["Uid"] == ["65532"] * 4 and ids["Gid"] == ["65532"] * 4, ids
    mounts = [m for m in c["Mounts"] if m["Destination"] == "/etc/argilla-gateway/users"]
    assert len(mounts) == 1 and mounts[0]["Type"] == "bind" and mounts[0]["RW"] is False, mounts
    assert mounts[0]["Source"] == FX["users_dir"]
    # The kernel's view from inside the gateway's mount namespace: mounted read-only.
    with open(f"/proc/{c['State']['Pid']}/mountinfo") as f:
        options = [line.split()[5] for line in f if line.split()[4] == "/etc/argilla-gateway/users"]
    assert len(options) == 1 and "ro" in options[0].split(","), options


def test_users_file_change_applies_within_a_second():
    import bcrypt  # noqa: PLC0415 (only this test writes users)

    entries = yaml.safe_load(open(USERS_FILE))
    password = "carol-" + os.urandom(8).hex()
    key = "carol." + os.urandom(16).hex()
    entries.append({
        "username": "carol",
        "api_key": key,
        "hashed_password": bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode(),
        "workspaces": ["team-new"],
    })
    USERS["carol"] = {"api_key": key, "password": password, "workspaces": ["team-new"]}
    assert me("carol").status_code == 401
    tmp = USERS_FILE + ".tmp"
    with open(tmp, "w") as f:
        f.write(yaml.safe_dump(entries, sort_keys=False))
    os.chmod(tmp, 0o644)
    written = time.monotonic()
    os.replace(tmp, USERS_FILE)  # by rename, like editors
    # Usable through the gateway AND upstream: carol logs into a workspace nobody had before.
    last = None
    while time.monotonic() - written < WITHIN:
        try:
            rg.init(api_url=GATEWAY, api_key=key, workspace="team-new", timeout=5)
            result = rg.log(records(3, "carol"), name="compose-carol")
            if (result.processed, result.failed) == (3, 0):
                break
        except Exception as error:  # noqa: BLE001 (retried until the deadline)
            last = error
        time.sleep(0.05)
    else:
        pytest.fail(f"carol could not log into team-new within {WITHIN}s: {last!r}")
    elapsed = time.monotonic() - written
    print(f"users-file change usable through the bind mount after {elapsed:.2f}s")
    assert len(rg.load("compose-carol")) == 3
    r = me(headers={"Authorization": "Basic " + base64.b64encode(f"carol:{password}".encode()).decode()})
    assert r.status_code == 200 and "team-new" in r.json()["workspaces"], r.text
    with pytest.raises(Exception, match="^Wrong provided workspace team-new$"):
        rg.init(api_url=GATEWAY, api_key=USERS["alice"]["api_key"], workspace="team-new", timeout=30)


def test_users_command_through_compose_run():
    # deploy/README.md's quick start: the folder is the gateway user's, and only the one
    # `docker compose run` that names deploy/compose.users.yml mounts it writable.
    users_dir = FX["users_dir"]
    for path in (users_dir, USERS_FILE):
        os.chown(path, 65532, 65532)
    started = time.monotonic()
    out = compose(
        "-f", os.path.join(ROOT, "deploy", "compose.users.yml"),
        "run", "--rm", "--no-deps", "-T", "gateway",
        "users", "add", "dave", "--workspace", "team-a", "--generate-password", "--cost", "4",
        check=False,
    )
    assert out.returncode == 0, out.stderr
    printed = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert set(printed) == {"api_key", "password"}, out.stdout
    USERS["dave"] = {"api_key": printed["api_key"], "password": printed["password"], "workspaces": ["team-a"]}
    # The running gateway applies it; its own mount stayed read-only.
    while me("dave").status_code != 200:
        assert time.monotonic() - started < 60, "dave never became usable"
        time.sleep(0.05)
    print(f"docker compose run users add: usable through the gateway after {time.monotonic() - started:.2f}s")
    r = me(headers={"Authorization": basic("dave")})
    assert r.status_code == 200 and "team-a" in r.json()["workspaces"], r.text
    assert os.stat(USERS_FILE).st_uid == 65532 and oct(os.stat(USERS_FILE).st_mode & 0o777) == "0o644"
    mounts = [m for m in inspect("gateway")["Mounts"] if m["Destination"] == "/etc/argilla-gateway/users"]
    assert len(mounts) == 1 and mounts[0]["RW"] is False, mounts
    # A second add of the same name is refused, and nothing is written.
    before = open(USERS_FILE, "rb").read()
    out = compose(
        "-f", os.path.join(ROOT, "deploy", "compose.users.yml"),
        "run", "--rm", "--no-deps", "-T", "gateway",
        "users", "add", "dave", "--generate-password", "--cost", "4",
        check=False,
    )
    assert out.returncode != 0 and "dave" in out.stderr, (out.returncode, out.stderr)
    assert open(USERS_FILE, "rb").read() == before


def test_restart_gateway_loses_no_user():
    started = time.monotonic()
    out = compose("restart", "gateway")
    assert out.returncode == 0, out.stderr
    wait_healthy("gateway", 60)
    print(f"docker-compose restart gateway: healthy again after {time.monotonic() - started:.2f}s")
    for user in USERS:
        r = me(user)
        assert r.status_code == 200 and r.json()["username"] == user, (user, r.text)
        r = me(headers={"Authorization": basic(user)})
        assert r.status_code == 200 and r.json()["username"] == user, (user, r.text)
    rg.init(api_url=GATEWAY, api_key=USERS["carol"]["api_key"], workspace="team-new", timeout=30)
    assert len(rg.load("compose-carol")) == 3
    compose_ps = compose("ps").stdout
    assert compose_ps.count("(healthy)") == 3, compose_ps


def test_gateway_image_size():
    size = int(docker("image", "inspect", "-f", "{{.Size}}", inspect("gateway")["Image"]).strip())
    print(f"gateway image: {size} bytes")
    assert size <= IMAGE_LIMIT, f"gateway image is {size} bytes, over {IMAGE_LIMIT}"
