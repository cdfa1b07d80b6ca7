"""Scenario 2: the Argilla 1.5.1 Python client with Basic credentials, through the gateway.

Argilla 1.5.1's AuthenticatedClient.get_headers() always sends
    Authorization: Bearer <api_key>, X-Argilla-Api-Key: <api_key>, X-Rubrix-Api-Key: <api_key>
(api_key falls back to $ARGILLA_API_KEY or "argilla.apikey" when not given), and then merges
rg.init's extra_headers over them. The gateway, like Argilla, reads X-Argilla-Api-Key first, so
Basic credentials only take effect when the key headers say nothing. The stock client cannot drop
a header, so we override both key headers with empty values and Authorization with Basic.
Argilla 1.5's server itself treats an empty key header as absent (it falls through to the
Authorization header), so the gateway must do the same: an empty key header is no credential.
"""

import argilla as rg
import pytest
from argilla.client.sdk.commons.errors import UnauthorizedApiError

from conftest import GATEWAY, basic_header, gw, records, upstream_dataset


def basic_init(user, password=None, workspace=None):
    rg.init(
        api_url=GATEWAY,
        workspace=workspace,
        extra_headers={
            "Authorization": basic_header(user, password),
            "X-Argilla-Api-Key": "",
            "X-Rubrix-Api-Key": "",
        },
    )
    return rg.active_client()


def test_client_sends_basic_and_no_key():
    client = basic_init("alice", workspace="team-b")
    headers = client.http_client.get_headers()
    assert headers["Authorization"].startswith("Basic ")
    assert headers["X-Argilla-Api-Key"] == "" and headers["X-Rubrix-Api-Key"] == ""


def test_basic_init_log_and_load():
    client = basic_init("alice")
    assert client.user.username == "alice"
    assert rg.get_workspace() == "alice"

    basic_init("alice", workspace="team-b")
    result = rg.log(records(120, "basic"), name="s2-basic", batch_size=50)
    assert (result.processed, result.failed) == (120, 0)
    assert upstream_dataset("s2-basic", "team-b")["owner"] == "team-b"
    assert len(rg.load("s2-basic", query="apples")) == 40


def test_basic_user_without_team_workspaces():
    client = basic_init("bob")
    assert client.user.username == "bob"
    assert rg.get_workspace() == "bob"
    with pytest.raises(Exception, match="^Wrong provided workspace team-b$"):
        basic_init("bob", workspace="team-b")


def test_basic_wrong_password_is_unauthorized():
    with pytest.raises(UnauthorizedApiError):
        basic_init("alice", password="not-the-password")
    with pytest.raises(UnauthorizedApiError):
        basic_init("nobody", password="whatever")


def test_curl_style_basic():
    # What `curl -u alice:password` sends: only an Authorization header.
    r = gw("GET", "/api/me", headers={"Authorization": basic_header("alice")})
    assert r.status_code == 200, r.text
    assert r.json()["username"] == "alice"
    r = gw("GET", "/api/datasets/", headers={"Authorization": basic_header("alice")})
    assert r.status_code == 200, r.text
    assert {d["owner"] for d in r.json()} <= {"alice", "team-a", "team-b"}
