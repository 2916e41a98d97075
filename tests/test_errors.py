import pytest

from orchestro import HTTPError


def test_http_error_problem_members() -> None:
    err = HTTPError(409, "order 7 shipped", title="Conflict!", type="https://x/conflict", order=7)
    assert err.to_problem() == {
        "type": "https://x/conflict",
        "title": "Conflict!",
        "status": 409,
        "detail": "order 7 shipped",
        "order": 7,
    }
    assert str(err) == "409 Conflict!: order 7 shipped"


def test_http_error_defaults_title_to_reason_phrase() -> None:
    assert HTTPError(404).to_problem() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
    }


def test_http_error_rejects_success_status() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        HTTPError(200)
