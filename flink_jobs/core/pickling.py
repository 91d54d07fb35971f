"""Pickling for the core's frozen dataclasses, compiled or not.

The job ships its rules to the workers pickled. A frozen dataclass compiled by mypyc cannot be
unpickled the default way (its fields are set one by one, which a frozen class refuses), so each
module registers its dataclasses with ``copyreg``: an instance pickles as its class and the
values of its constructor's fields, and is rebuilt by calling the constructor.
"""

from __future__ import annotations

import copyreg
from dataclasses import fields, is_dataclass
from typing import Any


def _rebuild(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    return type(obj), tuple(getattr(obj, f.name) for f in fields(obj) if f.init)


def register_dataclasses(namespace: dict[str, Any], module: str) -> None:
    """Register the dataclasses defined in ``module`` (its ``globals()``)."""
    for value in list(namespace.values()):
        if isinstance(value, type) and is_dataclass(value) and value.__module__ == module:
            copyreg.pickle(value, _rebuild)
