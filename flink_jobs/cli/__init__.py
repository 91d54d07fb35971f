"""What people run by hand: the ``segments`` command for rule authors (``segments.py``, with
``preview.py``), and the demo (``demo.py``)."""

from .segments import main

__all__ = ["main"]
