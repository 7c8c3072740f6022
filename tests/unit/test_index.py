"""The namespace UIDs listed at the start: used only for objects that existed when they were
listed (a namespace deleted and created again since has another UID), once each."""

from __future__ import annotations

from spacesecrets.engine.index import SpaceIndex
from spacesecrets.engine.state import State


class Namespaces:
    """The API's namespaces: listed at revision 100; `team` was created again since."""

    def __init__(self) -> None:
        self.gets: list[str] = []

    def list_namespace_uids(self) -> tuple[dict[str, str], int]:
        return {"team": "uid-old", "other": "uid-other"}, 100

    def list_custom_metadata(self, plural: str, namespace: str | None = None) -> list[object]:
        return []

    def namespace_uid(self, name: str) -> str:
        self.gets.append(name)
        return {"team": "uid-new", "other": "uid-other"}[name]


def _index() -> tuple[SpaceIndex, Namespaces]:
    api = Namespaces()
    index = SpaceIndex(api, State())  # type: ignore[arg-type]
    index.seed()
    return index, api


def test_an_object_not_newer_than_the_listing_takes_the_listed_uid() -> None:
    index, api = _index()
    assert index.namespace_uid("other", {"resourceVersion": "100"}) == "uid-other"
    assert api.gets == []


def test_an_object_newer_than_the_listing_asks_the_api() -> None:
    index, api = _index()
    # a SpaceSecrets created in the namespace made again after the listing
    assert index.namespace_uid("team", {"resourceVersion": "101"}) == "uid-new"
    assert api.gets == ["team"]


def test_a_listed_uid_serves_once_and_an_opaque_version_asks_the_api() -> None:
    index, api = _index()
    assert index.namespace_uid("other", {"resourceVersion": "7"}) == "uid-other"
    assert index.namespace_uid("other", {"resourceVersion": "7"}) == "uid-other"
    assert api.gets == ["other"]
    index, api = _index()
    assert index.namespace_uid("team", {"resourceVersion": "not-a-number"}) == "uid-new"
    assert api.gets == ["team"]
