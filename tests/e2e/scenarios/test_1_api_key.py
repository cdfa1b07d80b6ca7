"""Scenario 1: the Argilla 1.5.1 Python client with an API key, through the gateway.

alice works in team-a and team-b, bob has `workspaces: []` (only his own), admin is a superuser.
"""

import argilla as rg
import pytest
from argilla.client.sdk.commons.errors import ForbiddenApiError, NotFoundApiError

from conftest import argilla_error, gw, init, records, upstream_dataset, upstream_records

N = 300  # "a few hundred" records, logged in batches so that several :bulk calls go through


def test_init_without_workspace_uses_own_workspace():
    client = init("alice")
    assert rg.get_workspace() == "alice"
    assert client.user.username == "alice"
    assert set(client.user.workspaces) == {"team-a", "team-b", "alice"}

    client = init("bob")
    assert rg.get_workspace() == "bob"
    assert client.user.workspaces == ["bob"]


def test_init_with_team_workspace():
    init("alice", workspace="team-a")
    assert rg.get_workspace() == "team-a"
    init("alice", workspace="team-b")
    assert rg.get_workspace() == "team-b"


@pytest.mark.parametrize("user,workspace", [("alice", "team-c"), ("alice", "bob"), ("bob", "team-a")])
def test_init_with_foreign_workspace_fails_like_argilla(user, workspace):
    # Argilla 1.5's client checks the workspace against /api/me and raises this exact exception.
    with pytest.raises(Exception, match=f"^Wrong provided workspace {workspace}$"):
        init(user, workspace=workspace)


def test_log_into_own_workspace():
    init("alice")
    result = rg.log(records(N, "own"), name="s1-alice-own", batch_size=100)
    assert (result.processed, result.failed) == (N, 0)

    stored = upstream_dataset("s1-alice-own", "alice")
    assert stored is not None, "dataset did not land in alice's own workspace upstream"
    assert stored["owner"] == "alice"
    assert upstream_records("s1-alice-own", "alice", limit=0)["total"] == N
    assert upstream_dataset("s1-alice-own", "team-a") is None


def test_log_into_team_workspace():
    init("alice", workspace="team-a")
    result = rg.log(records(N, "team"), name="s1-team-a", batch_size=100)
    assert (result.processed, result.failed) == (N, 0)

    stored = upstream_dataset("s1-team-a", "team-a")
    assert stored is not None, "dataset did not land in team-a upstream"
    assert stored["owner"] == "team-a"
    assert upstream_records("s1-team-a", "team-a", limit=0)["total"] == N
    assert upstream_dataset("s1-team-a", "alice") is None


def test_bob_logs_into_his_own_workspace():
    init("bob")
    result = rg.log(records(20, "bob"), name="s1-bob-own")
    assert (result.processed, result.failed) == (20, 0)
    assert upstream_dataset("s1-bob-own", "bob")["owner"] == "bob"


def test_load_with_query():
    init("alice", workspace="team-a")
    everything = rg.load("s1-team-a")
    assert len(everything) == N
    apples = rg.load("s1-team-a", query="apples")
    assert len(apples) == N // 3
    assert all("apples" in record.text for record in apples)

    init("alice")
    own = rg.load("s1-alice-own", query="text:oranges", limit=50)
    assert len(own) == 50
    assert all("oranges" in record.text for record in own)


def test_dataset_list_only_shows_own_workspaces():
    def listed(user):
        r = gw("GET", "/api/datasets/", user=user)
        assert r.status_code == 200, r.text
        return {(d["name"], d["owner"]) for d in r.json()}

    alice = listed("alice")
    assert {("s1-alice-own", "alice"), ("s1-team-a", "team-a")} <= alice
    assert {owner for _, owner in alice} <= {"alice", "team-a", "team-b"}
    bob = listed("bob")
    assert ("s1-bob-own", "bob") in bob
    assert {owner for _, owner in bob} == {"bob"}
    admin = listed("admin")
    assert {("s1-alice-own", "alice"), ("s1-team-a", "team-a"), ("s1-bob-own", "bob")} <= admin


@pytest.fixture(scope="module")
def other_team_dataset(fx):
    """A dataset in team-c, which only the superuser (admin) can reach."""
    init("admin", workspace=fx["other_team"])
    result = rg.log(records(10, "secret"), name="s1-secret")
    assert (result.processed, result.failed) == (10, 0)
    assert upstream_dataset("s1-secret", fx["other_team"]) is not None
    return "s1-secret"


def test_load_other_teams_dataset_is_not_found(other_team_dataset):
    for user, workspace in [("alice", "team-a"), ("alice", None), ("bob", None)]:
        init(user, workspace=workspace)
        with pytest.raises(NotFoundApiError) as error:
            rg.load(other_team_dataset)
        assert error.value.ctx["code"] == "argilla.api.errors::EntityNotFoundError", (user, workspace)
        assert error.value.ctx["params"]["name"] == other_team_dataset, (user, workspace)


def test_forced_foreign_workspace_header_is_not_found(other_team_dataset):
    # A client that skips rg.init's check and sends the other team's workspace header itself.
    client = init("alice", workspace="team-a")
    client.http_client.headers["X-Argilla-Workspace"] = "team-c"
    client.http_client.headers["X-Rubrix-Workspace"] = "team-c"
    with pytest.raises(NotFoundApiError) as error:
        rg.load(other_team_dataset)
    assert error.value.ctx["params"] == {"name": "team-c", "type": "Workspace"}


def test_foreign_workspace_query_is_argillas_not_found(other_team_dataset):
    r = gw("GET", f"/api/datasets/{other_team_dataset}", user="alice", params={"workspace": "team-c"})
    assert r.status_code == 404, r.text
    assert argilla_error(r) == ("EntityNotFoundError", {"name": "team-c", "type": "Workspace"})


def test_delete_refused_for_non_superuser():
    init("alice", workspace="team-a")
    with pytest.raises(ForbiddenApiError) as error:
        rg.delete("s1-team-a")
    assert error.value.ctx["code"] == "argilla.api.errors::ForbiddenOperationError"
    init("alice")
    with pytest.raises(ForbiddenApiError):
        rg.delete("s1-alice-own")
    assert upstream_dataset("s1-team-a", "team-a") is not None
    assert upstream_dataset("s1-alice-own", "alice") is not None


def test_delete_by_superuser():
    init("admin", workspace="team-a")
    rg.delete("s1-team-a")
    assert upstream_dataset("s1-team-a", "team-a") is None
    init("admin", workspace="alice")
    rg.delete("s1-alice-own")
    assert upstream_dataset("s1-alice-own", "alice") is None
