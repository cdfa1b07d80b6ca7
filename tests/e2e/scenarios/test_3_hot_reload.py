"""Scenario 3: users.yml is hot-reloaded while everything runs (nothing is restarted).

carol is added to the gateway's users file (rewritten in place) and must be able to use the
client within a second; then she is removed (file replaced by rename, as editors do) and must be
refused within a second, with her API key, Basic credentials and a token issued before.
"""

import argilla as rg
import pytest
import requests
from argilla.client.sdk.commons.errors import UnauthorizedApiError

from conftest import (
    GATEWAY,
    USERS,
    basic_header,
    gw,
    poll_until,
    read_users_file,
    records,
    upstream_dataset,
    write_users_file,
)

WITHIN = 1.0  # seconds


@pytest.fixture(scope="module")
def original_users():
    entries = read_users_file()
    yield entries
    write_users_file(entries, atomic=True)


def carol_can_init():
    try:
        rg.init(api_url=GATEWAY, api_key=USERS["carol"]["api_key"], workspace="team-a", timeout=5)
        return True
    except UnauthorizedApiError:
        return False


def carol_is_refused():
    return gw("GET", "/api/me", user="carol").status_code == 401


def test_unknown_user_is_refused(original_users):
    assert "carol" not in {u["username"] for u in original_users}
    with pytest.raises(UnauthorizedApiError):
        rg.init(api_url=GATEWAY, api_key=USERS["carol"]["api_key"])


def test_added_user_works_within_a_second(original_users):
    write_users_file(original_users + [USERS["carol"]["entry"]], atomic=False)
    ok, elapsed = poll_until(carol_can_init, WITHIN)
    assert ok, f"carol still refused {elapsed:.2f}s after being added to users.yml"

    result = rg.log(records(30, "carol"), name="s3-carol")
    assert (result.processed, result.failed) == (30, 0)
    assert upstream_dataset("s3-carol", "team-a") is not None
    assert len(rg.load("s3-carol")) == 30
    # the other users keep working
    assert gw("GET", "/api/me", user="alice").json()["username"] == "alice"
    assert gw("GET", "/api/me", user="bob").json()["workspaces"] == ["bob"]


def test_removed_user_is_refused_within_a_second(original_users):
    login = requests.post(
        GATEWAY + "/api/security/token",
        data={"username": "carol", "password": USERS["carol"]["password"]},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    assert gw("GET", "/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    write_users_file(original_users, atomic=True)
    refused, elapsed = poll_until(carol_is_refused, WITHIN)
    assert refused, f"carol still accepted {elapsed:.2f}s after being removed from users.yml"

    with pytest.raises(UnauthorizedApiError):
        rg.init(api_url=GATEWAY, api_key=USERS["carol"]["api_key"], workspace="team-a")
    assert gw("GET", "/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert gw("GET", "/api/me", headers={"Authorization": basic_header("carol")}).status_code == 401
    r = gw("GET", "/api/datasets/s3-carol", user="carol", params={"workspace": "team-a"})
    assert r.status_code == 401
    # the others are unaffected
    assert gw("GET", "/api/me", user="alice").status_code == 200
    assert gw("GET", "/api/me", user="bob").status_code == 200
