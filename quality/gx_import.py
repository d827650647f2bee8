"""Importing Great Expectations without the parts of it the gates never call.

``import great_expectations`` imports every expectation it ships, and two of them bring their own heavy
dependencies at import time: the KL-divergence and KS-test expectations ``scipy.stats``, their charts
``altair``. That is 0.85 s of a 2.1 s import on this machine, paid by every command that validates an
append (curation of 200,000 rows takes ~17 s in all). While GX is imported, those two modules are
stand-ins that import the real module on first use, so an expectation that does use them still works.

The import also builds a few hundred thousand objects (pydantic models of every expectation) that live as long as
the process. Collected as they are built, they cost four full collections (0.22 s, holding the GIL the run's other
threads need, of a 200,000-row curation's 0.31 s of garbage collection); so the collector is paused during the
import and every object alive after it, most of them the import's, is then frozen (``gc.freeze``; not once torch or
triton is loaded, see :func:`~prefhouse.pipelines.core.process.freeze_what_is_alive`), out of every later
collection's way: 0.04 s in all.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import types
from typing import Any

from prefhouse.pipelines.core.process import freeze_what_is_alive

DEFERRED = ("scipy.stats", "altair")

_lock = threading.RLock()  # a stand-in used during the import itself loads its module under the same lock


class _DeferredModule(types.ModuleType):
    """A module that imports the real one the first time one of its attributes is read."""

    def __getattr__(self, attr: str) -> Any:
        with _lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def import_gx() -> types.ModuleType:
    """``great_expectations``, imported once per process with :data:`DEFERRED` standing in until used (checked
    under the lock: while another thread imports it, the module is in ``sys.modules`` half initialised)."""
    with _lock:
        if "great_expectations" in sys.modules:
            return sys.modules["great_expectations"]
        stand_ins = {name: _DeferredModule(name) for name in DEFERRED if name not in sys.modules}
        sys.modules.update(stand_ins)
        collecting = gc.isenabled()
        gc.disable()
        try:
            import great_expectations
        finally:
            # from here on, an import of these names gets the real module; GX's own references forward to it
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
            freeze_what_is_alive()
            if collecting:
                gc.enable()
    return great_expectations
