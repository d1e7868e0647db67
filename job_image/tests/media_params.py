"""Parameters of the generated test media, shared by fixtures and tests.

A module of its own (not conftest) because every test folder's conftest is importable
as ``conftest`` and the first one on ``sys.path`` wins when the whole suite runs.
"""

TONE_F0 = 220.0  # Hz
TONE_SECONDS = 3.0
