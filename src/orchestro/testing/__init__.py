"""The test kit: run a cell in-process and talk to it, with its dependencies replaced.

```python
from orchestro.testing import CellClient, make_cell

async def test_greet():
    async with CellClient(Greeter) as client:
        response = await client.get("/greet", params={"name": "Ada"})
        assert response.json() == {"message": "Hello Ada from Orchestro Cell!"}
```

With pytest, the ``cell_client`` fixture does the same and closes the clients after the test.
"""

from .chaos import Fault, FaultKind, FaultPlan, Phase
from .client import CellClient, TestResponse
from .clock import FakeClock
from .factory import make_cell
from .faults import FaultInjector, MockTransport
from .telemetry import CapturedSpans, Metrics, capture_spans, read_metrics

__all__ = [
    "CapturedSpans",
    "CellClient",
    "FakeClock",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "Metrics",
    "MockTransport",
    "Phase",
    "TestResponse",
    "capture_spans",
    "make_cell",
    "read_metrics",
]
