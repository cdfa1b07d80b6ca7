#!/usr/bin/env python3
"""How long deploy/argilla-upstream.py takes to apply a users file, by the file's size.

    .e2e/venv-server/bin/python bench/upstream-users.py        # after tests/e2e/run.sh installed it

Run with the Python that has argilla[server] 1.5 (it builds Argilla's own user objects). For 100,
1 000 and 10 000 users (each with an e-mail and two workspaces) it times, in this one process,
what the launcher does on a change before the single swap: read the file, check it under the
gateway's rules, and build Argilla's users (service mode: one superuser listing every workspace;
passthrough: one Argilla user per entry). Median of 5 runs each; prints a markdown table.
The server's own requests, which share the process, are not part of it.
"""

import importlib.util
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (100, 1000, 10000)
RUNS = 5
# bcrypt (cost 4) of a password thrown away: the launcher checks the hash's form, not the password.
HASH = "$2b$04$zdJfWLWJUoAFfX.InLOOhu./puyyhZ8eMdP/rkQwNbHmxYBygphau"


def load_launcher():
    path = os.path.join(ROOT, "deploy", "argilla-upstream.py")
    spec = importlib.util.spec_from_file_location("argilla_upstream", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def users_file(n):
    return "".join(
        f"- username: user{i:06d}\n  hashed_password: \"{HASH}\"\n  api_key: key-{i:06d}-0123456789abcdef0123456789\n"
        f"  email: user{i}@example.com\n  workspaces: [team-{i % 100}, shared]\n"
        for i in range(n)
    )


def main():
    launcher = load_launcher()
    try:
        from argilla.server.security.auth_provider.local.users.model import UserInDB
    except ImportError:
        sys.exit("run this with the Python that has argilla[server] 1.5 (e.g. .e2e/venv-server/bin/python)")

    print("| users | bytes | service mode: median ms | passthrough mode: median ms | passthrough µs per user |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for n in SIZES:
            path = os.path.join(folder, f"users-{n}.yml")
            with open(path, "w") as f:
                f.write(users_file(n))
            timings = {}
            for mode in ("service", "passthrough"):
                runs = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    entries = launcher.parse_users(path, launcher.read_users_file(path))
                    upstream = launcher.upstream_entries(entries, mode, "service-key-0123456789")
                    users = {u.username: u for u in (UserInDB(**e) for e in upstream)}
                    runs.append(time.perf_counter() - started)
                    assert len(users) == (1 if mode == "service" else n)
                timings[mode] = statistics.median(runs)
            print(
                f"| {n} | {os.path.getsize(path)} | {timings['service'] * 1000:.0f} | "
                f"{timings['passthrough'] * 1000:.0f} | {timings['passthrough'] / n * 1e6:.0f} |"
            )


if __name__ == "__main__":
    main()
