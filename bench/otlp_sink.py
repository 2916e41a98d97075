"""A local OTLP/HTTP sink for benchmarks: accepts every export, counts the bytes.

python bench/otlp_sink.py --port 4318
"""

from __future__ import annotations

import argparse

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    received = {"bytes": 0, "exports": 0}

    async def export(request: web.Request) -> web.Response:
        received["bytes"] += len(await request.read())
        received["exports"] += 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(received)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", export)
    app.router.add_post("/v1/metrics", export)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
