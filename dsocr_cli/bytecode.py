"""Whether an installed package has compiled bytecode.

Without it (an image built with PYTHONDONTWRITEBYTECODE=1 or `pip install --no-compile`) every
dsocr call compiles torch's ~2,000 source files before doing any work: on an H200 host whose image
shipped torch so, `import torch` took 3.0-3.8 s, and 1.6-2.4 s once compiled; `ocr` on one page
went from 5.3-6.8 s to 3.7-4.4 s. `dsocr info` says so, with the command that fixes it.
"""
from __future__ import annotations

import importlib.util
import os


def missing_bytecode(package: str) -> str | None:
    """The package's folder when its __init__ has no compiled bytecode where Python looks for it
    (PYTHONPYCACHEPREFIX respected); None when it has, or the package is not installed from source."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return None if os.path.exists(importlib.util.cache_from_source(spec.origin)) else os.path.dirname(spec.origin)
