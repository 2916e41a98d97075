"""Transports: how a call reaches an instance (HTTP, or a direct call in this process)."""

from .base import CallRequest, CallResponse, Transport

__all__ = ["CallRequest", "CallResponse", "Transport"]
