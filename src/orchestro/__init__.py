"""orchestro: cells for Python microservices.

```python
from pydantic import BaseModel
from orchestro import cell, service

class Greeting(BaseModel):
    message: str

@cell("greeter", port=8081)
class Greeter:
    @service.get("/greet")
    async def greet(self, name: str | None = None) -> Greeting:
        return Greeting(message=f"Hello {name} from Orchestro Cell!")
```

Run it with ``python -m orchestro run module_or_file.py``.
"""

from . import controller, mesh, observability
from ._version import __version__
from .cell import Body, Header, Query, cell, service, spec_of
from .cell.edge import CORS
from .cell.response import Response
from .cell.scaling import Scaling
from .errors import (
    CallError,
    CellDefinitionError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceeded,
    DiscoveryError,
    HTTPError,
    NoInstancesError,
    OrchestroError,
    RemoteError,
    RetryBudgetExhausted,
    StartupError,
    TargetError,
    TransportError,
)
from .mesh import CallPolicy, Mesh
from .security import Caller

__all__ = [
    "Body",
    "CORS",
    "CallError",
    "CallPolicy",
    "Caller",
    "CellDefinitionError",
    "CircuitOpenError",
    "ConfigurationError",
    "DeadlineExceeded",
    "DiscoveryError",
    "HTTPError",
    "Header",
    "Mesh",
    "NoInstancesError",
    "OrchestroError",
    "Query",
    "RemoteError",
    "Response",
    "RetryBudgetExhausted",
    "Scaling",
    "StartupError",
    "TargetError",
    "TransportError",
    "__version__",
    "cell",
    "controller",
    "mesh",
    "observability",
    "service",
    "spec_of",
]
