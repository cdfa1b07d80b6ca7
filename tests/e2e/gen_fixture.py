"""Writes one stack's users file and fixture: random keys, passwords and bcrypt hashes.

Usage: gen_fixture.py RUN_DIR GATEWAY_URL UPSTREAM_URL MODE UPSTREAM_LOG

MODE is the gateway's upstream mode (service or passthrough); UPSTREAM_LOG is where run.sh
writes the upstream launcher's log (deploy/argilla-upstream.py), read by scenario 4. The upstream
takes its users from gateway-users.yml through that launcher: there is no second users file.

Writes into RUN_DIR:
  gateway-users.yml   the gateway's users file: alice (team workspaces), bob (`workspaces: []`)
                      and admin (superuser)
  fixture.json        everything the scenarios need: URLs, file paths, users and their secrets,
                      plus carol (scenario 3), erin and dave (scenario 4), who the scenarios add
                      to and remove from gateway-users.yml
  secrets.env         shell assignments read by run.sh (upstream service key, gateway secret)
"""

import json
import os
import secrets
import shlex
import sys

import bcrypt
import yaml

TEAM_WORKSPACES = ["team-a", "team-b"]
OTHER_TEAM = "team-c"
NEW_WORKSPACE = "team-new"


def user(username, workspaces, superuser=None, rounds=4):
    password = secrets.token_urlsafe(12)
    entry = {
        "username": username,
        "hashed_password": bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode(),
        "api_key": f"{username}.{secrets.token_hex(16)}",
        "email": f"{username}@example.com",
        "full_name": username.capitalize(),
    }
    if workspaces is not None:
        entry["workspaces"] = workspaces
    if superuser is not None:
        entry["superuser"] = superuser
    return entry, password


def main():
    run_dir, gateway_url, upstream_url, mode, upstream_log = sys.argv[1:6]
    if mode not in ("service", "passthrough"):
        sys.exit("gen_fixture.py: MODE must be service or passthrough, not %r" % mode)
    alice, alice_pw = user("alice", list(TEAM_WORKSPACES))
    bob, bob_pw = user("bob", [])
    # A superuser that also names the other team's workspace, so that the gateway knows it.
    admin, admin_pw = user("admin", [OTHER_TEAM], superuser=True)
    carol, carol_pw = user("carol", ["team-a"])
    # Scenario 4: erin arrives with a workspace nobody named before; dave's workspaces churn.
    erin, erin_pw = user("erin", [NEW_WORKSPACE])
    dave, dave_pw = user("dave", [])
    # The key the gateway sends upstream in service mode (deploy/argilla-upstream.py makes it the
    # upstream's only superuser). In passthrough mode the upstream knows the file's users, so
    # the scenarios check the upstream with admin's own key.
    service_key = "gateway-service." + secrets.token_hex(24)

    gateway_users = os.path.join(run_dir, "gateway-users.yml")
    with open(gateway_users, "w") as f:
        yaml.safe_dump([alice, bob, admin], f, sort_keys=False)

    def public(entry, password):
        return {
            "username": entry["username"],
            "password": password,
            "api_key": entry["api_key"],
            "workspaces": entry.get("workspaces"),
            "entry": entry,
        }

    fixture = {
        "gateway_url": gateway_url,
        "upstream_url": upstream_url,
        "mode": mode,
        "upstream_api_key": service_key if mode == "service" else admin["api_key"],
        "upstream_log": upstream_log,
        "new_workspace": NEW_WORKSPACE,
        "gateway_users_file": gateway_users,
        "run_dir": run_dir,
        "team_workspaces": TEAM_WORKSPACES,
        "other_team": OTHER_TEAM,
        "users": {
            "alice": public(alice, alice_pw),
            "bob": public(bob, bob_pw),
            "admin": public(admin, admin_pw),
            "carol": public(carol, carol_pw),
            "erin": public(erin, erin_pw),
            "dave": public(dave, dave_pw),
        },
    }
    with open(os.path.join(run_dir, "fixture.json"), "w") as f:
        json.dump(fixture, f, indent=2)

    assignments = {
        "UPSTREAM_API_KEY": service_key,
        "GATEWAY_SECRET_KEY": secrets.token_hex(32),
    }
    with open(os.path.join(run_dir, "secrets.env"), "w") as f:
        for name, value in assignments.items():
            f.write(f"{name}={shlex.quote(value)}\n")


if __name__ == "__main__":
    main()
