"""The public surface is deliberate: this test pins it."""

import orchestro
import orchestro.testing


def test_exported_members_are_pinned() -> None:
    assert orchestro.__all__ == [
        "Body",
        "CORS",
        "CallError",
        "CallPolicy",
        "Caller",
        "CellDefinitionError",
        "CircuitOpenError",
        "ConfigurationError",
        "DeadlineExceeded",
        "DiscoveryError",
        "HTTPError",
        "Header",
        "Mesh",
        "NoInstancesError",
        "OrchestroError",
        "Query",
        "RemoteError",
        "Response",
        "RetryBudgetExhausted",
        "Scaling",
        "StartupError",
        "TargetError",
        "TransportError",
        "__version__",
        "cell",
        "controller",
        "mesh",
        "observability",
        "service",
        "spec_of",
    ]


def test_all_is_sorted_and_importable() -> None:
    assert orchestro.__all__ == sorted(orchestro.__all__)
    for name in orchestro.__all__:
        assert hasattr(orchestro, name), name
    assert orchestro.testing.__all__ == [
        "CapturedSpans",
        "CellClient",
        "FakeClock",
        "Fault",
        "FaultInjector",
        "FaultKind",
        "FaultPlan",
        "Metrics",
        "MockTransport",
        "Phase",
        "TestResponse",
        "capture_spans",
        "make_cell",
        "read_metrics",
    ]


def test_error_tree() -> None:
    for error in (
        orchestro.ConfigurationError,
        orchestro.StartupError,
        orchestro.DiscoveryError,
        orchestro.CallError,
        orchestro.HTTPError,
    ):
        assert issubclass(error, orchestro.OrchestroError)
    assert issubclass(orchestro.CellDefinitionError, orchestro.ConfigurationError)
    assert issubclass(orchestro.TargetError, orchestro.ConfigurationError)
    for call_error in (
        orchestro.NoInstancesError,
        orchestro.CircuitOpenError,
        orchestro.DeadlineExceeded,
        orchestro.RetryBudgetExhausted,
        orchestro.TransportError,
        orchestro.RemoteError,
    ):
        assert issubclass(call_error, orchestro.CallError)
