"""The gateway's router: literal paths, placeholders by specificity, 404 and 405."""

from __future__ import annotations

import pytest

from orchestro.gateway.router import Router


@pytest.fixture
def router() -> Router[str]:
    r: Router[str] = Router()
    r.add("GET", "/orders/{order_id}", "get-order")
    r.add("DELETE", "/orders/{order_id}", "delete-order")
    r.add("GET", "/orders/summary", "summary")
    r.add("GET", "/orders/{order_id}/lines/{line}", "line")
    r.add("GET", "/orders", "list")
    r.add("POST", "/orders", "create")
    r.freeze()
    return r


def test_literal_paths(router: Router[str]) -> None:
    assert router.resolve("GET", "/orders").target == "list"
    assert router.resolve("POST", "/orders").target == "create"


def test_literal_wins_over_placeholder(router: Router[str]) -> None:
    assert router.resolve("GET", "/orders/summary").target == "summary"
    match = router.resolve("GET", "/orders/7")
    assert (match.target, dict(match.params)) == ("get-order", {"order_id": "7"})


def test_several_placeholders_and_percent_decoding(router: Router[str]) -> None:
    match = router.resolve("GET", "/orders/a%2Fb/lines/%C3%A9")
    assert (match.target, dict(match.params)) == ("line", {"order_id": "a/b", "line": "é"})


def test_placeholders_never_span_segments(router: Router[str]) -> None:
    assert router.resolve("GET", "/orders/1/2").target is None
    assert router.resolve("GET", "/orders/").target is None


def test_unknown_path_and_wrong_method(router: Router[str]) -> None:
    missing = router.resolve("GET", "/nope")
    assert (missing.target, missing.allowed) == (None, ())
    wrong = router.resolve("PUT", "/orders/3")
    assert (wrong.target, wrong.allowed) == (None, ("GET", "DELETE"))
    assert router.resolve("PATCH", "/orders").allowed == ("GET", "POST")


def test_frozen_router_refuses_routes(router: Router[str]) -> None:
    with pytest.raises(RuntimeError, match="frozen"):
        router.add("GET", "/late", "late")


def test_duplicate_route_is_refused() -> None:
    r: Router[str] = Router()
    r.add("GET", "/a", "one")
    with pytest.raises(ValueError, match="routed twice"):
        r.add("GET", "/a", "two")
