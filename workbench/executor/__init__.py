"""One executor for every run of the pipeline: a ``Plan`` and ``execute(plan, out)``."""
from .plan import Plan
from .run import DEFAULT_CACHE, execute

__all__ = ["Plan", "execute", "DEFAULT_CACHE"]
