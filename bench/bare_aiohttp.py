"""The baseline: a bare aiohttp handler answering GET /greet with the same JSON as hello."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

BODY = {"message": "Hello from Orchestro Cell!"}


async def greet(request: web.Request) -> web.Response:
    return web.json_response(BODY)


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/greet", greet)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"bare serving on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
