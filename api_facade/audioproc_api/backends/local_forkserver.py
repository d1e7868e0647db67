"""Imported by the local backend's forkserver only (its preload), never by the service.

The forkserver dies with the service (``PR_SET_PDEATHSIG``) instead of shutting its
interpreter down after the service is gone (which takes a second or more with torch loaded),
and imports the pipeline once, so that the workers it forks start in milliseconds.
"""

from audioproc_api.backends.local_worker import die_with_parent

die_with_parent()

import audioproc.runner  # noqa: E402, F401 (the preload itself)
