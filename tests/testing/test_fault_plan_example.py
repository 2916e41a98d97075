"""The docs' example of seeded chaos (docs/how-to/testing.md shows this whole file)."""

from examples.frontend import Frontend
from examples.hello import Greeter

from orchestro import Mesh
from orchestro.testing import CellClient, FaultInjector, FaultKind, Phase


async def test_the_frontend_rides_out_a_seeded_storm(cell_client, fault_plan) -> None:
    async with CellClient(Greeter) as one, CellClient(Greeter) as two:
        plan = fault_plan(
            Phase(calls=10),  # warm-up: no faults
            Phase(calls=30, error=0.1, drop=0.05, delay=0.1, delay_seconds=0.02),
            Phase(calls=30, kill=0.1, down=5),  # instances die, and are back 5 calls later
            seed=2024,  # leave it out for a new storm each run: a failure prints the seed
        )
        faults = FaultInjector().follow(plan)
        registry = f"static://greeter={one.url},greeter={two.url}"
        async with Mesh(registry, transport=faults) as calls:
            frontend = await cell_client(Frontend, mesh=calls)
            for _ in range(60):
                assert (await frontend.get("/hello/Ada")).status == 200
    assert {fault.kind for fault in plan.log} >= {FaultKind.ERROR, FaultKind.KILL}
