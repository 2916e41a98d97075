"""The CLI as a new user meets it: their own project directory, ``python -m orchestro``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import aiohttp

from tests.conftest import Cli, run_cli, start_cli

ACCOUNTS = """
from orchestro import cell, service


@cell("accounts", port=0)
class Accounts:
    @service.get("/balance")
    async def balance(self) -> int:
        return 42
"""


def project(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


async def test_a_package_runs_the_cells_of_the_submodules_it_imports(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    project(
        tmp_path,
        {
            "bank/__init__.py": "from . import accounts, ledger\n",
            "bank/accounts.py": ACCOUNTS,
            "bank/ledger.py": ACCOUNTS.replace('"accounts"', '"ledger"').replace(
                "Accounts", "Ledger"
            ),
        },
    )
    cli = await start_cli("run", "bank", cwd=tmp_path)
    cli_processes.append(cli)
    assert sorted(await cli.wait_serving(2)) == ["accounts", "ledger"]


async def test_a_package_with_no_cells_says_what_to_do(tmp_path: Path) -> None:
    project(tmp_path, {"bank/__init__.py": "", "bank/accounts.py": ACCOUNTS})
    code, _, err = await run_cli("run", "bank", cwd=tmp_path)
    assert code == 2
    assert "no cells in 'bank'" in err
    assert "import the modules that define its cells in its __init__.py" in err


async def test_a_syntax_error_shows_the_users_line_only(tmp_path: Path) -> None:
    project(
        tmp_path,
        {"bank/__init__.py": "from . import accounts\n", "bank/accounts.py": "def f(:\n"},
    )
    code, _, err = await run_cli("run", "bank", cwd=tmp_path)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0] == "orchestro: error: importing 'bank' raised SyntaxError:"
    assert lines[-1] == "SyntaxError: invalid syntax"
    assert f'File "{tmp_path / "bank" / "accounts.py"}", line 1' in err
    assert len(lines) == 8, err  # was 36-39 lines, mostly importlib and orchestro frames
    assert "importlib" not in err
    assert "orchestro/" not in err.replace("orchestro: error", "")


async def test_an_import_error_shows_the_users_frames_and_the_cause(tmp_path: Path) -> None:
    project(
        tmp_path,
        {
            "app.py": "from helpers import connect\n",
            "helpers.py": "import definitely_not_installed_pkg\n\nconnect = None\n",
        },
    )
    code, _, err = await run_cli("run", "app.py", cwd=tmp_path)
    assert code == 1
    assert err.strip().splitlines() == [
        "orchestro: error: importing 'app' raised ModuleNotFoundError:",
        "Traceback (most recent call last):",
        f'  File "{tmp_path / "app.py"}", line 1, in <module>',
        "    from helpers import connect",
        f'  File "{tmp_path / "helpers.py"}", line 1, in <module>',
        "    import definitely_not_installed_pkg",
        "ModuleNotFoundError: No module named 'definitely_not_installed_pkg'",
    ]


async def test_a_bad_environment_variable_is_named_not_a_flag(tmp_path: Path) -> None:
    project(tmp_path, {"app.py": ACCOUNTS})
    env = {"ORCHESTRO_MESH_TIMEOUT": "abc"}
    code, _, err = await run_cli("run", "app.py", cwd=tmp_path, env=env)
    assert code == 2
    assert err.strip() == (
        "orchestro: error: ORCHESTRO_MESH_TIMEOUT: Input should be a valid number, unable to "
        "parse string as a number (got 'abc')"
    )
    code, _, err = await run_cli("run", "app.py", "--drain-timeout", "-1", cwd=tmp_path)
    assert (code, err.split(":")[:3]) == (2, ["orchestro", " error", " --drain-timeout"])


WRONG_ANSWERS = """
from orchestro import cell, service


@cell("counter", port=0)
class Counter:
    @service.get("/count")
    async def count(self) -> int:
        return "not an int"

    @service.get("/fine")
    async def fine(self) -> int:
        return 3
"""


async def test_an_answer_that_does_not_match_its_annotation_is_a_logged_500(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    project(tmp_path, {"app.py": WRONG_ANSWERS})
    cli = await start_cli("run", "app.py", "--log-format", "text", cwd=tmp_path)
    cli_processes.append(cli)
    url = (await cli.wait_serving())["counter"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/count") as response:
            assert response.status == 500
            assert response.content_type == "application/problem+json"
            body = await response.json()
        async with session.get(f"{url}/fine") as response:
            assert (response.status, await response.json()) == (200, 3)
    assert body["detail"] == (
        "the service's answer does not match its declared type; the cause is in the cell's log"
    )
    assert "not an int" not in str(body)
    cli.signal()
    await cli.exits_with(0)
    assert (
        "Counter.count returned a value that does not match its return annotation int: value: "
        "Input should be a valid integer, unable to parse string as an integer (got 'not an int')"
    ) in await cli.stderr()


async def test_a_return_annotation_with_no_json_form_is_refused_at_import(tmp_path: Path) -> None:
    project(
        tmp_path,
        {
            "app.py": WRONG_ANSWERS.replace(
                "-> int:\n        return 3", "-> set[object]:\n        return set()"
            )
        },
    )
    code, _, err = await run_cli("run", "app.py", cwd=tmp_path)
    assert code == 2
    assert err.strip() == (
        "orchestro: error: Counter.fine: its return annotation set[object] contains object, "
        "which has no JSON form: use a concrete type, a pydantic model, or Any"
    )
