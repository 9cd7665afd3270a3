"""Moved to :mod:`mnd.protect.faces` (``mnd protect`` is a package of its own); this old name is the same module."""

import sys

from mnd.protect import faces as _moved

sys.modules[__name__] = _moved
