"""Writes one run's users files and fixture: random keys, passwords and bcrypt hashes.

Usage: gen_fixture.py RUN_DIR GATEWAY_URL UPSTREAM_URL

Writes into RUN_DIR:
  upstream-users.yml  the upstream Argilla's users file: one superuser, `gateway`, whose
                      `workspaces` names every workspace the scenarios use (an Argilla 1.5
                      superuser only reaches workspaces named in its own file)
  gateway-users.yml   the gateway's users file: alice (team workspaces), bob (`workspaces: []`)
                      and admin (superuser)
  fixture.json        everything the scenarios need: URLs, file paths, users and their secrets,
                      plus carol, who scenario 3 adds to and removes from gateway-users.yml
  secrets.env         shell assignments read by run.sh (upstream service key and secrets)
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
    run_dir, gateway_url, upstream_url = sys.argv[1:4]
    alice, alice_pw = user("alice", list(TEAM_WORKSPACES))
    bob, bob_pw = user("bob", [])
    # A superuser that also names the other team's workspace, so that the gateway knows it.
    admin, admin_pw = user("admin", [OTHER_TEAM], superuser=True)
    carol, carol_pw = user("carol", ["team-a"])
    service, _ = user("gateway", None, rounds=4)

    every_workspace = TEAM_WORKSPACES + [OTHER_TEAM, "alice", "bob", "admin", "carol"]
    service["workspaces"] = every_workspace
    service["superuser"] = True

    def dump(path, entries):
        with open(path, "w") as f:
            yaml.safe_dump(entries, f, sort_keys=False)

    upstream_users = os.path.join(run_dir, "upstream-users.yml")
    gateway_users = os.path.join(run_dir, "gateway-users.yml")
    dump(upstream_users, [service])
    dump(gateway_users, [alice, bob, admin])

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
        "upstream_api_key": service["api_key"],
        "gateway_users_file": gateway_users,
        "run_dir": run_dir,
        "team_workspaces": TEAM_WORKSPACES,
        "other_team": OTHER_TEAM,
        "users": {
            "alice": public(alice, alice_pw),
            "bob": public(bob, bob_pw),
            "admin": public(admin, admin_pw),
            "carol": public(carol, carol_pw),
        },
    }
    with open(os.path.join(run_dir, "fixture.json"), "w") as f:
        json.dump(fixture, f, indent=2)

    assignments = {
        "UPSTREAM_API_KEY": service["api_key"],
        "UPSTREAM_DEFAULT_APIKEY": secrets.token_hex(24),
        "UPSTREAM_SECRET_KEY": secrets.token_hex(32),
        "GATEWAY_SECRET_KEY": secrets.token_hex(32),
    }
    with open(os.path.join(run_dir, "secrets.env"), "w") as f:
        for name, value in assignments.items():
            f.write(f"{name}={shlex.quote(value)}\n")


if __name__ == "__main__":
    main()
