"""A frontend cell that calls the greeter through the mesh.

Two terminals, no configuration (they find each other through the local registry):

    python -m orchestro run examples/hello.py        # the greeter, on 8081
    python -m orchestro run examples/frontend.py     # the frontend, on 8080
    curl http://127.0.0.1:8080/hello/Ada
"""

from orchestro import CallError, HTTPError, RemoteError, cell, mesh, service

from .hello import Greeter, Greeting


@cell("frontend", port=8080, version="1.0.0")
class Frontend:
    """The public face: greets through the greeter cell."""

    greeter = mesh.client(Greeter)  # typed: discovery, balancing, deadlines, retries

    @service.get(
        "/hello/{name}",
        responses={502: "The greeter failed", 503: "No greeter is available"},
    )
    async def hello(self, name: str) -> Greeting:
        """Greet someone, through the greeter."""
        try:
            return await self.greeter.greet(name=name)
        except RemoteError as exc:
            raise HTTPError(502, f"the greeter answered {exc.status}") from exc
        except CallError as exc:  # no instance, deadline, budget, unreachable
            raise HTTPError(503, f"the greeter is unavailable: {exc}") from exc
