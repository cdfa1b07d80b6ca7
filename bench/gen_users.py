#!/usr/bin/env python3
"""Writes the benchmark's users files and the matching nginx map / Caddy basicauth blocks.

Usage: gen_users.py OUTDIR N_USERS HASHES_FILE

HASHES_FILE holds bcrypt hashes, one a line: the first three are cost-10 hashes of the
passwords of bench-basic, bench-token and victim (in that order); the rest are cost-4 hashes
reused round-robin by the bulk users (bcrypt of 10 000 distinct passwords would measure
bcrypt, not the proxies; every hash string is still a separate entry the gateway parses).

Writes OUTDIR/users-N.yml, and, unless N is large (> 20 000), OUTDIR/nginx-keys-N.map,
OUTDIR/haproxy-keys-N.map and OUTDIR/caddy-users-N.txt with the same users, so every proxy authenticates against the same
population.
"""

import sys
from pathlib import Path

# Credentials the load generator uses (the bench is on loopback; these are not secrets).
BASIC_PASSWORD = "basic-pass-1"
TOKEN_PASSWORD = "token-pass-1"
VICTIM_PASSWORD = "victim-pass-1"
KEY = "bench-key-0123456789abcdef0123456789ab"


def main() -> None:
    out, n, hashes_file = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    hashes = [h.strip() for h in hashes_file.read_text().splitlines() if h.strip()]
    basic_h, token_h, victim_h, bulk = hashes[0], hashes[1], hashes[2], hashes[3:]
    special = [
        ("bench-key", bulk[0], KEY, "[team-a]"),
        ("bench-basic", basic_h, "bench-basic-key-0123456789abcdef01234", "[team-a]"),
        ("bench-token", token_h, "bench-token-key-0123456789abcdef01234", "[team-a]"),
        ("victim", victim_h, "victim-key-0123456789abcdef0123456789", "[team-a]"),
    ]
    users = list(special)
    for i in range(n - len(special)):
        users.append(
            (
                f"user{i:06d}",
                bulk[i % len(bulk)],
                f"key-{i:06d}-{(i * 2654435761) % (1 << 32):08x}-0123456789abcdef",
                f"[team-{i % 100}, shared]",
            )
        )
    yml = []
    for name, h, key, ws in users:
        yml.append(
            f"- username: {name}\n  hashed_password: '{h}'\n  api_key: {key}\n"
            f"  email: {name}@example.com\n  workspaces: {ws}\n"
        )
    (out / f"users-{n}.yml").write_text("".join(yml))
    if n <= 20_000:
        (out / f"nginx-keys-{n}.map").write_text(
            "".join(f'"{key}" "{name}";\n' for name, _, key, _ in users)
        )
        (out / f"haproxy-keys-{n}.map").write_text(
            "".join(f"{key} {name}\n" for name, _, key, _ in users)
        )
        (out / f"caddy-users-{n}.txt").write_text(
            "".join(f"\t\t{name} {h}\n" for name, h, _, _ in users)
        )


if __name__ == "__main__":
    main()
