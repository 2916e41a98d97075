"""The public surface is deliberate: this test pins it."""

import orchestro
import orchestro.testing


def test_exported_members_are_pinned() -> None:
    assert orchestro.__all__ == [
        "Body",
        "Caller",
        "CellDefinitionError",
        "CellHost",
        "CellSpec",
        "CellState",
        "ConfigurationError",
        "DiscoveryError",
        "GatewaySettings",
        "HTTPError",
        "Header",
        "OrchestroError",
        "Query",
        "Response",
        "StartupError",
        "TargetError",
        "__version__",
        "cell",
        "service",
        "spec_of",
    ]


def test_all_is_sorted_and_importable() -> None:
    assert orchestro.__all__ == sorted(orchestro.__all__)
    for name in orchestro.__all__:
        assert hasattr(orchestro, name), name
    assert orchestro.testing.__all__ == ["CellClient", "FakeClock", "TestResponse", "make_cell"]


def test_error_tree() -> None:
    for error in (
        orchestro.ConfigurationError,
        orchestro.StartupError,
        orchestro.DiscoveryError,
        orchestro.HTTPError,
    ):
        assert issubclass(error, orchestro.OrchestroError)
    assert issubclass(orchestro.CellDefinitionError, orchestro.ConfigurationError)
    assert issubclass(orchestro.TargetError, orchestro.ConfigurationError)
