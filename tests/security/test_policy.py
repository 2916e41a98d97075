from __future__ import annotations

import logging

import pytest

from orchestro.errors import CellDefinitionError, HTTPError
from orchestro.security.identity import ANONYMOUS, Caller
from orchestro.security.policy import PolicyMode, access_rule

TELLER, SHOP, AUDITOR = Caller("teller"), Caller("shop"), Caller("auditor")


def rule(path: str = "/secret", *, internal: bool = True, **allow: list[str]):  # type: ignore[no-untyped-def]
    return access_rule(cell="vault", method="get", path=path, internal=internal, **allow)


def test_public_services_answer_anyone_and_need_no_identity() -> None:
    public = rule("/info", internal=False, cell_allow=["teller"])
    assert not public.needs_identity
    assert public.check(ANONYMOUS).allowed
    assert public.check(SHOP).allowed


def test_without_allow_any_proven_cell_may_call_an_internal_service() -> None:
    internal = rule()
    assert internal.check(SHOP).allowed
    decision = internal.check(ANONYMOUS)
    assert not decision.allowed
    assert decision.message == (
        "service GET /secret of cell 'vault' is internal: only cells of the trust domain may "
        "call it; caller is anonymous (no client certificate)"
    )


def test_a_cell_allow_list_denies_everyone_else_naming_the_rule() -> None:
    guarded = rule(cell_allow=["teller"])
    assert guarded.check(TELLER).allowed
    denied = guarded.check(SHOP)
    assert not denied.allowed
    assert denied.message == (
        "cell 'vault' allows only ['teller'] for GET /secret; caller is cell 'shop'"
    )
    assert not guarded.check(ANONYMOUS).allowed


def test_a_service_allow_list_replaces_the_cells() -> None:
    audit = access_rule(
        cell="vault",
        method="post",
        path="/audit",
        internal=True,
        cell_allow=["teller"],
        service_allow=["auditor"],
    )
    assert audit.check(AUDITOR).allowed
    assert audit.check(TELLER).message == (
        "service POST /audit of cell 'vault' allows only ['auditor']; caller is cell 'teller'"
    )


def test_an_empty_allow_list_denies_every_cell() -> None:
    assert not rule(cell_allow=[]).check(TELLER).allowed


def test_enforce_raises_a_403_problem_with_the_rule() -> None:
    with pytest.raises(HTTPError) as raised:
        rule(cell_allow=["teller"]).enforce(SHOP)
    problem = raised.value.to_problem()
    assert problem["status"] == 403
    assert problem["caller"] == "shop"
    assert problem["cell"] == "vault"
    assert problem["rule"] == "allow"
    assert "allows only ['teller']" in problem["detail"]


def test_audit_mode_logs_and_lets_the_call_through(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "orchestro.security.policy"):
        decision = rule(cell_allow=["teller"]).enforce(SHOP, PolicyMode.AUDIT)
    assert not decision.allowed
    assert "would refuse: cell 'vault' allows only ['teller']" in caplog.text


def test_declaration_mistakes_are_definition_errors() -> None:
    with pytest.raises(CellDefinitionError, match="allow= needs internal=True"):
        rule("/info", internal=False, service_allow=["teller"])
    with pytest.raises(CellDefinitionError, match=r"allow=\['teller'\]"):
        rule(cell_allow="teller")  # type: ignore[arg-type]
