"""The optional C extension; everything else is in pyproject.toml.

``orchestro.observability._lines`` makes the gateway's JSON access lines (see
``src/orchestro/observability/_lines.c``). It is optional: where it cannot be built (no
compiler) or ``ORCHESTRO_NO_EXTENSIONS`` is set at install time, orchestro installs without it
and makes those lines in Python, the same lines more slowly.
"""

import os
import sys

from setuptools import Extension, setup

# Floating-point contraction (a fused multiply-add) would round a request's duration once
# where Python rounds twice: the C line must show the duration the Python line shows.
flags = [] if sys.platform == "win32" else ["-ffp-contract=off"]
extensions = [
    Extension(
        "orchestro.observability._lines",
        ["src/orchestro/observability/_lines.c"],
        extra_compile_args=flags,
        optional=True,
    )
]
setup(ext_modules=[] if os.environ.get("ORCHESTRO_NO_EXTENSIONS") else extensions)
