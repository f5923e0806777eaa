"""Import spaCy without PyTorch.

thinc (spaCy's ML library) imports ``torch`` when it is installed, for optional PyTorch
layers that spaCy's CNN pipelines (``en_core_web_sm``) never use. The gateway process must not
load torch: models run in worker processes, torch costs seconds and hundreds of MiB, and once
rego-cpp (``regopy``) has evaluated a policy, importing torch in the same process aborts it
(``free(): invalid pointer``; see docs/policy.md for the other rego-cpp/torch clash).

``without_torch()`` hides torch from imports made inside it (they see ``ImportError``, which
thinc handles: ``has_torch = False``). Nothing is cached, so a later ``import torch``
elsewhere in the process (the test suite's worker tests) still works. A process that already
loaded torch keeps it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType


class _HideTorch(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torch" or fullname.startswith("torch."):
            raise ImportError(f"{fullname} is not imported in the gateway process", name=fullname)
        return None


@contextmanager
def without_torch() -> Iterator[None]:
    if "torch" in sys.modules:
        yield
        return
    finder = _HideTorch()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
