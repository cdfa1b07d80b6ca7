"""Scenario 6: the real server closes its connection after error answers; nobody pays for it.

uvicorn in front of Argilla 1.5.1 drops the connection a moment after a 400/403/409/500,
without `Connection: close`. Re-creating an existing dataset triggers it at will. Through the
gateway, the same keep-alive client connection and every other user's requests must go on
without a single 502.
"""

import threading

import argilla as rg
import requests

from conftest import GATEWAY, GATEWAY_TIMEOUT, USERS, gw, init, records

DATASET = "s6-conflict"


def session(user):
    s = requests.Session()
    s.headers["X-Argilla-Api-Key"] = USERS[user]["api_key"]
    return s


def call(s, method, path, **kwargs):
    return s.request(method, GATEWAY + path, timeout=GATEWAY_TIMEOUT, **kwargs)


def test_recreating_a_dataset_then_working_on_never_gets_502():
    init("alice", workspace="team-a")
    result = rg.log(records(30, "s6"), name=DATASET, batch_size=30)
    assert (result.processed, result.failed) == (30, 0)

    statuses = []
    others = []
    stop = threading.Event()

    def other_user():
        # bob on his own connections, reading his workspace while alice provokes closes.
        s = session("bob")
        while not stop.is_set():
            others.append(call(s, "GET", "/api/datasets/", params={"workspace": "bob"}).status_code)

    reader = threading.Thread(target=other_user)
    reader.start()
    try:
        s = session("alice")
        for _ in range(20):
            conflict = call(
                s,
                "POST",
                "/api/datasets",
                params={"workspace": "team-a"},
                json={"name": DATASET, "task": "TextClassification"},
            )
            statuses.append(("create again", conflict.status_code))
            assert conflict.status_code == 409, conflict.text
            assert conflict.json()["detail"]["code"].endswith("EntityAlreadyExistsError")
            for method, path, kwargs in [
                ("GET", f"/api/datasets/{DATASET}", {}),
                ("POST", f"/api/datasets/{DATASET}/TextClassification:search", {"json": {"query": {}}}),
                ("GET", "/api/_info", {}),
                ("GET", "/api/datasets/", {}),
            ]:
                r = call(s, method, path, params={"workspace": "team-a"}, **kwargs)
                statuses.append((path, r.status_code))
    finally:
        stop.set()
        reader.join(timeout=GATEWAY_TIMEOUT)

    bad = [(what, code) for what, code in statuses if code >= 500]
    assert not bad, f"{len(bad)} of {len(statuses)} follow-up requests failed: {bad[:5]}"
    assert len(statuses) == 100
    assert all(code == 200 for what, code in statuses if what != "create again")
    assert others and all(code == 200 for code in others), sorted(set(others))

    # The Python client, right after another conflict, still logs and loads.
    assert gw("POST", "/api/datasets", "alice", params={"workspace": "team-a"},
              json={"name": DATASET, "task": "TextClassification"}).status_code == 409
    result = rg.log(records(10, "s6-more"), name=DATASET, batch_size=10)
    assert (result.processed, result.failed) == (10, 0)
    assert len(rg.load(DATASET)) == 40
