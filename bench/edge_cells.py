"""The cells bench/edge.py measures: the hello greeter, with a rate limit, and with a rate
limit plus a bearer token (API key or JWT). Run one with ``--cell NAME``."""

from pydantic import BaseModel

from orchestro import cell, service


class Greeting(BaseModel):
    message: str


MESSAGE = "Hello from Orchestro Cell!"


@cell("plain")
class Plain:
    @service.get("/greet")
    async def greet(self, name: str | None = None) -> Greeting:
        return Greeting(message=MESSAGE)


# A limit no benchmark reaches: every request runs the limiter and is let in.
@cell("limited", rate_limit="1000000/s")
class Limited:
    @service.get("/greet")
    async def greet(self, name: str | None = None) -> Greeting:
        return Greeting(message=MESSAGE)


@cell("keyed", rate_limit="1000000/s", auth="api-key")
class Keyed:
    @service.get("/greet")
    async def greet(self, name: str | None = None) -> Greeting:
        return Greeting(message=MESSAGE)


@cell("signed", rate_limit="1000000/s", auth="jwt")
class Signed:
    @service.get("/greet")
    async def greet(self, name: str | None = None) -> Greeting:
        return Greeting(message=MESSAGE)
