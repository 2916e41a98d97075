"""Example cells. Run one with ``python -m orchestro run examples/hello.py``."""
