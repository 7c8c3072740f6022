"""What the operator asks the API server to answer a write with: the object when it reads it,
its metadata only when nobody does (a history Secret or a space's status is 10-20 KB the API
server would encode and send for nothing). The integration tests run these writes for real."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spacesecrets.kube.client import METADATA, Kube
from spacesecrets.kube.transport import JSON, Response, Transport


class Recorder(Transport):
    def __init__(self) -> None:
        self.accepts: list[str] = []

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> Response:
        self.accepts.append(accept)
        return Response(200, b'{"metadata": {"name": "x", "resourceVersion": "7"}}')


def test_a_write_whose_answer_is_not_read_asks_for_metadata_only() -> None:
    recorder = Recorder()
    kube = Kube(recorder)
    secret = {"metadata": {"name": "history-a"}, "data": {}}
    assert kube.create("Secret", "ops", secret, answer=False) == {}
    kube.replace("Secret", "ops", secret, answer=False)
    kube.patch_status("spacesecrets", "a", "secrets", {"version": 1})
    kube.create_role_binding("a", {"metadata": {"name": "owners"}})
    assert recorder.accepts == [METADATA] * 4


def test_a_write_whose_answer_is_read_gets_the_object() -> None:
    recorder = Recorder()
    kube = Kube(recorder)
    written = kube.create("Secret", "a", {"metadata": {"name": "target"}})
    stored = kube.patch_status("flowsecretsyncs", "a", "f", {"syncedVersion": 1}, answer=True)
    assert written["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"] == "7"
    assert recorder.accepts == [JSON, JSON]
