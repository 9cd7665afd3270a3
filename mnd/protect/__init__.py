"""``mnd protect``, the privacy tool: whole photos protected at full resolution, checked on the saved file.

- :mod:`~mnd.protect.photo`: image classifiers (the model's view of a full-resolution photo, the strength
  levels, the saved file's verdict, ``report.csv``'s columns).
- :mod:`~mnd.protect.faces`: every face of a photo at once (dlib's descriptor, InceptionResnetV1).
- :mod:`~mnd.protect.face_cuts`: where the faces are and how each is cut, differentiably.
- :mod:`~mnd.protect.unseen`: checks on models that never gave a gradient (``--check``), also used by
  ``mnd attack`` and the grid.

Imports :mod:`mnd.core`, :mod:`mnd.models`, :mod:`mnd.data` and :mod:`mnd.errors`; the old module names
``mnd.experiments.protect`` and ``mnd.experiments.protect_faces`` still give these modules' names.
"""

from mnd.protect.faces import CRITERIA, protect_face_photo
from mnd.protect.photo import REPORT_COLUMNS, OutputFormat, Settings, Strength, load_strengths, protect_photo
from mnd.protect.unseen import CAVEAT, UNSEEN_COLUMNS, Checked, check_names, unseen_columns, unseen_of

__all__ = [
    "CAVEAT", "CRITERIA", "REPORT_COLUMNS", "UNSEEN_COLUMNS", "Checked", "OutputFormat", "Settings", "Strength",
    "check_names", "load_strengths", "protect_face_photo", "protect_photo", "unseen_columns", "unseen_of",
]
