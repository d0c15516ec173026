"""pixmesh/client.py is generated from pixmesh/aio.py (pixmesh/_unasync.py): fresh, and the same API."""

from __future__ import annotations

import inspect

import pixmesh
from pixmesh import _unasync


def test_client_py_is_what_unasync_makes_of_aio_py() -> None:
    assert _unasync.TARGET.read_text(encoding="utf-8") == _unasync.generate(), (
        "pixmesh/client.py is stale: run `make sdk`"
    )


def test_sync_and_async_clients_have_the_same_methods_and_arguments() -> None:
    def api(cls: type) -> dict[str, list[tuple[str, object, object]]]:
        out = {}
        for name, member in vars(cls).items():
            if callable(member) and not (name.startswith("_") and not name.startswith("__")):
                params = inspect.signature(member).parameters.values()
                out[name] = [(p.name, p.kind, p.default) for p in params]
        return out

    sync, asyn = api(pixmesh.Client), api(pixmesh.AsyncClient)
    asyn["__enter__"] = asyn.pop("__aenter__")
    asyn["__exit__"] = asyn.pop("__aexit__")
    assert sync == asyn
    assert {"process", "upload", "create_job", "watch_job", "list_jobs"} <= set(sync)
