"""The operator's API access against the real API server: LISTs read a page at a time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from spacesecrets.kube import client as kube_module
from spacesecrets.kube.client import Kube
from spacesecrets.kube.transport import Response, Transport

LABEL = "test.spacesecrets.io/page"


class Recording(Transport):
    """Forwards every request to the real API server and notes the LIST queries sent. It can
    also answer one page request with 410 Gone: an expired continue token cannot be provoked for
    real within a test (the API server honours one for about five minutes, until etcd compacts)."""

    def __init__(self, inner: Any, expire_page: int | None = None) -> None:
        self.inner, self.expire_page = inner, expire_page
        self.queries: list[dict[str, str]] = []

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Response:
        if method == "GET" and query and "limit" in query:
            self.queries.append(dict(query))
            if len(self.queries) == self.expire_page:
                return Response(410, b'{"reason": "Expired", "message": "continue expired"}')
        return self.inner.request(
            method, path, body, query=query, content_type=content_type, accept=accept
        )


def _secrets(kube: Kube, ns: str, count: int) -> None:
    for n in range(count):
        kube.create(
            "Secret",
            ns,
            {"metadata": {"name": f"s{n}", "labels": {LABEL: "yes"}}, "data": {}},
        )


def test_a_list_is_read_a_page_at_a_time(
    kube: Kube, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _secrets(kube, ns, 5)
    monkeypatch.setattr(kube_module, "LIST_PAGE", 2)
    recording = Recording(kube.http)
    paged = Kube(recording)
    names = [s["metadata"]["name"] for s in paged.list_secrets(ns, f"{LABEL}=yes")]
    assert sorted(names) == ["s0", "s1", "s2", "s3", "s4"]
    assert [q["limit"] for q in recording.queries] == ["2", "2", "2"]
    assert "continue" not in recording.queries[0]
    assert all(q.get("continue") for q in recording.queries[1:])


def test_an_expired_continue_token_restarts_the_list_once(
    kube: Kube, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _secrets(kube, ns, 5)
    monkeypatch.setattr(kube_module, "LIST_PAGE", 2)
    recording = Recording(kube.http, expire_page=2)
    names = {s["metadata"]["name"] for s in Kube(recording).list_secrets(ns, f"{LABEL}=yes")}
    assert names == {"s0", "s1", "s2", "s3", "s4"}
    # page 1, the expired page 2, then the whole list again from the start
    assert len(recording.queries) == 2 + 3
    assert "continue" not in recording.queries[2]
