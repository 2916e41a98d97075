"""Deployment generated from the cells themselves: Kubernetes objects, a Dockerfile and a
compose file, as pure functions of the cells' specs, their ``Scaling`` and the settings.

```python
from orchestro.cli.deploy import load_app
from orchestro.deploy import DeployOptions, manifests

app = load_app("examples/shop.py", DeployOptions(namespace="shop"))
for name, text in manifests(app).items():
    (out / name).write_text(text)
```
"""

from __future__ import annotations

from .app import App, CellModel, DeployOptions
from .docker import compose, dockerfile, dockerignore
from .kubernetes import manifests

__all__ = [
    "App",
    "CellModel",
    "DeployOptions",
    "compose",
    "dockerfile",
    "dockerignore",
    "manifests",
]
