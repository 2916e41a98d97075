"""The gateway: a cell's HTTP entry point (routing, binding, validation, OpenAPI, health)."""

from .app import Gateway, build_gateway
from .openapi import build_openapi
from .responses import Response

__all__ = ["Gateway", "Response", "build_gateway", "build_openapi"]
