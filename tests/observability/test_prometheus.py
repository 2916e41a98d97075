"""A real Prometheus finds every cell through /prometheus/sd and scrapes their metrics; the
Grafana dashboard queries only metrics that orchestro emits."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..conftest import ROOT, Cli, start_cli
from ..servers import Prometheus

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "observability"
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
PROMETHEUS_OWN = {"up"}


def dashboard_metrics(path: Path) -> set[str]:
    """Every metric name the dashboard's PromQL expressions read."""
    dashboard = json.loads(path.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r'"[^"]*"', "", target["expr"])
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
            expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)
            expr = re.sub(r"(?<![\w.])\d+(\.\d+)?(e\d+)?", "", expr)  # numbers: 0.99, 1e6
            for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
                word = match.group(0)
                follows = expr[match.end() :].lstrip()[:1]
                if word not in PROMQL_WORDS and follows != "(":
                    names.add(word)
    return names


def test_the_dashboard_is_valid_json_reading_known_metrics() -> None:
    names = dashboard_metrics(EXAMPLE / "grafana-dashboard.json")
    assert "http_server_request_duration_seconds_bucket" in names
    assert "orchestro_mesh_breaker_state" in names
    assert "rate" not in names
    assert "histogram_quantile" not in names


@pytest.fixture
def prometheus_config() -> Iterator[Any]:
    made: list[Prometheus] = []

    def start(sd_url: str) -> Prometheus:
        text = (EXAMPLE / "prometheus.yml").read_text()
        assert "http://127.0.0.1:8081/prometheus/sd" in text
        text = text.replace("http://127.0.0.1:8081/prometheus/sd", sd_url)
        text = text.replace("scrape_interval: 5s", "scrape_interval: 1s")
        text = text.replace("refresh_interval: 5s", "refresh_interval: 1s")
        server = Prometheus(text)
        made.append(server)
        server.start()
        return server

    yield start
    for server in made:
        server.close()


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[Any]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_prometheus_discovers_and_scrapes_every_cell(
    cli_processes: list[Cli], prometheus_config: Any
) -> None:
    greeter = await start_cli("run", "examples/hello.py", "--port", "0")
    cli_processes.append(greeter)
    greeter_url = (await greeter.wait_serving())["greeter"]
    frontend = await start_cli("run", "examples/frontend.py", "--port", "0")
    cli_processes.append(frontend)
    frontend_url = (await frontend.wait_serving())["frontend"]
    prometheus = prometheus_config(f"{greeter_url}/prometheus/sd")

    async with aiohttp.ClientSession() as session:
        ok = 0
        for _ in range(200):
            async with session.get(f"{frontend_url}/hello/Ada") as response:
                ok += response.status == 200
            if ok >= 20:
                break
            await asyncio.sleep(0.02)
        assert ok >= 20

        # Discovery: both instances become targets, labelled with cell and instance.
        async with asyncio.timeout(40):
            while True:
                async with session.get(f"{prometheus.url}/api/v1/targets") as response:
                    active = (await response.json())["data"]["activeTargets"]
                up = {t["labels"]["cell"]: t for t in active if t["health"] == "up"}
                if {"greeter", "frontend"} <= set(up):
                    break
                await asyncio.sleep(0.25)
        for name, target in up.items():
            assert target["labels"]["instance"].startswith(f"{name}-")

        # Scraping: request counters with the cell and route labels, for both cells.
        async with asyncio.timeout(30):
            while True:
                found = await query(
                    session, prometheus.url, "http_server_request_duration_seconds_count"
                )
                cells = {r["metric"].get("orchestro_cell") for r in found}
                if {"greeter", "frontend"} <= cells:
                    break
                await asyncio.sleep(0.25)
        by_cell = {r["metric"]["orchestro_cell"]: r["metric"] for r in found}
        assert by_cell["frontend"]["http_route"] == "/hello/{name}"
        assert by_cell["frontend"]["cell"] == "frontend"  # the target label from http_sd
        assert by_cell["greeter"]["http_request_method"] == "GET"
        assert by_cell["greeter"]["http_response_status_code"] == "200"
        served = await query(
            session,
            prometheus.url,
            'sum(http_server_request_duration_seconds_count{orchestro_cell="frontend"})',
        )
        assert float(served[0]["value"][1]) >= 20
        calls = await query(
            session,
            prometheus.url,
            'http_client_request_duration_seconds_count{server_address="greeter"}',
        )
        assert calls
        assert calls[0]["metric"]["orchestro_cell"] == "frontend"

        # The dashboard reads nothing that is not there.
        wanted = dashboard_metrics(EXAMPLE / "grafana-dashboard.json") - PROMETHEUS_OWN
        pattern = "|".join(sorted(wanted))
        present = await query(
            session, prometheus.url, f'count by (__name__) ({{__name__=~"{pattern}"}})'
        )
        assert {r["metric"]["__name__"] for r in present} == wanted
