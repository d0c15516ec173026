"""The embedded local stack: every server pixmesh needs, from PyPI wheels, on loopback.

`python -m deploy.local up|down` (what `make up`/`make down` run) and the pytest session fixtures
both drive `Stack`.
"""

from deploy.local.ports import SERVICES, PortInUseError, Ports
from deploy.local.process import ProcessExitedError, StackError
from deploy.local.stack import Stack

__all__ = ["SERVICES", "PortInUseError", "Ports", "ProcessExitedError", "Stack", "StackError"]
