"""Moved to :mod:`mnd.protect.photo` (``mnd protect`` is a package of its own); this old name is the same module."""

import sys

from mnd.protect import photo as _moved

sys.modules[__name__] = _moved
