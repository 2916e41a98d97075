"""The OpenAPI 3.1 document: built from the pydantic schemas, internal services left out."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from orchestro import spec_of
from orchestro.gateway import build_openapi
from orchestro.testing import CellClient

from ..conftest import ROOT, start_cli
from .cells import Answers, Binder, Failures


def test_document_shape() -> None:
    doc = build_openapi(spec_of(Binder))
    assert doc["openapi"] == "3.1.0"
    assert doc["info"] == {"title": "binder", "version": "0.0.0"}
    assert set(doc["paths"]) == {
        "/items/{item_id}/{when}",
        "/query",
        "/headers",
        "/baskets",
        "/numbers",
        "/optional",
        "/defaults",
        "/raw",
    }
    assert {"Basket", "Line", "Problem", "Echo"} <= set(doc["components"]["schemas"])


def test_parameters_carry_their_validators_schemas() -> None:
    doc = build_openapi(spec_of(Binder))
    query = {p["name"]: p for p in doc["paths"]["/query"]["get"]["parameters"]}
    assert query["n"] == {
        "name": "n",
        "in": "query",
        "required": True,
        "schema": {"type": "integer"},
    }
    assert query["ratio"]["schema"] == {"type": "number", "default": 0.5}
    # optional parameters are omitted, never null: the schema has no null
    assert query["color"]["schema"] == {"$ref": "#/components/schemas/Color"}
    assert query["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["id"]["schema"]["items"] == {"type": "integer"}
    assert query["page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 1}
    path = doc["paths"]["/items/{item_id}/{when}"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in path] == [
        ("item_id", "path", True),
        ("when", "path", True),
    ]
    headers = doc["paths"]["/headers"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in headers] == [
        ("x-tenant", "header", True),
        ("X-Trace", "header", False),
    ]


def test_bodies_and_responses() -> None:
    doc = build_openapi(spec_of(Binder))
    post = doc["paths"]["/baskets"]["post"]
    assert post["requestBody"] == {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Basket"}}},
    }
    assert set(post["responses"]) == {"200", "400", "413", "415", "422", "500", "503"}
    assert post["responses"]["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert doc["paths"]["/optional"]["patch"]["requestBody"]["required"] is False


def test_statuses_follow_the_declaration() -> None:
    doc = build_openapi(spec_of(Answers))
    assert set(doc["paths"]["/nothing"]["delete"]["responses"]) == {"204", "500", "503"}
    assert "201" in doc["paths"]["/created"]["post"]["responses"]
    assert {"200", "204"} <= set(doc["paths"]["/maybe"]["get"]["responses"])
    assert doc["paths"]["/model"]["get"]["responses"]["200"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/Line"}}
    }


def test_internal_services_are_left_out() -> None:
    doc = build_openapi(spec_of(Failures))
    assert "/audit" not in doc["paths"]
    assert "504" in doc["paths"]["/slow"]["get"]["responses"]


async def test_served_document_matches(cell_client) -> None:  # type: ignore[no-untyped-def]
    client: CellClient = await cell_client(Binder)
    response = await client.get("/openapi.json")
    assert response.content_type == "application/json"
    assert response.json() == build_openapi(spec_of(Binder))


COMPANIONS = {"frontend.py": ["hello.py"]}  # cells an example calls
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "__init__.py")


# What an example needs to start: edge.py's API keys (schemathesis sends none: every service
# that asks for one must answer 401, as its document says).
ENVIRONMENT = {"edge.py": {"ORCHESTRO_API_KEYS": "ci=" + "k" * 32}}


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
async def test_schemathesis_finds_no_failure(example: str, tmp_path: Path) -> None:
    """Property-based conformance: the document tells the truth about every example cell."""
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis, "schemathesis is part of the test extra: pip install -e '.[test]'"
    companions = [
        await start_cli("run", f"examples/{other}", "--port", "0")
        for other in COMPANIONS.get(example, [])
    ]
    for companion in companions:
        await companion.wait_serving()
    cli = await start_cli(
        "run", f"examples/{example}", "--host", "127.0.0.1", env=ENVIRONMENT.get(example)
    )
    try:
        urls = await cli.wait_serving(len(_cells_in(example)))
        for url in urls.values():
            proc = await asyncio.create_subprocess_exec(
                schemathesis,
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "50",
                "--seed",
                "1",
                "--no-color",
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0, out.decode()[-4000:]
    finally:
        cli.signal()
        await cli.exits_with(0)
        for companion in companions:
            companion.signal()
            await companion.exits_with(0)


def _cells_in(example: str) -> list[str]:
    from orchestro.cli.importer import load_cells

    return [spec_of(c).name for c in load_cells(f"examples/{example}")]
