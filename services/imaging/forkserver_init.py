"""Imported by the forkserver of the pipeline processes, and nowhere else (isolation.py preloads it).

The forkserver lives in the service's process group. A process manager that signals the whole
group on shutdown (`make down`, systemd) would kill it with SIGTERM while the service is still
draining, and the pool would take the forkserver's death for the death of every child. Children
forked from here inherit the setting; the service stops them itself once it has drained.

They inherit what it imported: the pipelines, PyAV and numpy, which the service process itself
never imports. Not its malloc settings: glibc's defaults serve image jobs best, and a video job
sets its own while it runs (services/imaging/video/heap.py). The objects imported so far are frozen
out of the garbage collector (gc.freeze), so that a child's collections do not write to, and so
copy, the pages it shares with the forkserver and its siblings (not measured apart: the idle
children's PSS in bench/video stayed within 2 MiB of what it was before).
"""

import gc
import signal

import services.imaging.service  # what a child unpickles its work from
import services.imaging.video.run  # noqa: F401  (the service process never imports it)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
gc.freeze()
