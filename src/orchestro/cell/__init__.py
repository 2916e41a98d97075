"""Cells: the unit a user writes, runs and scales."""

from .decorators import RESERVED_PATHS, cell, service
from .params import Body, Header, Query
from .spec import CellSpec, OperationSpec, ParamSource, ParamSpec, ServiceSpec, spec_of

__all__ = [
    "RESERVED_PATHS",
    "Body",
    "CellSpec",
    "Header",
    "OperationSpec",
    "ParamSource",
    "ParamSpec",
    "Query",
    "ServiceSpec",
    "cell",
    "service",
    "spec_of",
]
