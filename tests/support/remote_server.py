"""An NDIF server in this process, stricter than nnsight's own ``remote="local"`` dry run.

nnsight's ``LocalSimulationBackend`` serialises a trace, deserialises it with local modules
hidden, and then runs the *original* trace: whatever the body leaves in Python objects (a
monitor's events, a dict a closure fills) comes back although a server would keep it, and an
editable install of steer stays importable while the payload is read. :class:`StrictServer`
does what a server does instead:

* it deserialises the payload with steer, its plugins and the test helpers unimportable (a
  meta-path finder refuses them), so only code sent by value can run;
* it runs the *deserialised* trace against the model it serves (the persistent ids of the
  payload resolve to that model's modules, as on a server where the client never sent them);
* it sends back only the values the body saved, through ``torch.save``/``torch.load`` as
  nnsight's remote backend receives them, and writes them into the caller's frame.

The model served can be another object than the client's: a client holding a weightless
(meta) copy gets the results of the real weights, as with NDIF. This leans on nnsight's and
cloudpickle's internals (test-only; pinned nnsight 0.8).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import sys
from typing import Any

import torch

HIDDEN = ("steer", "steer_plugins", "support")


class _Refuse:
    """A meta-path finder that makes steer (and these helpers) unimportable."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed on the server)")
        return None


@contextlib.contextmanager
def without_steer():
    """steer's modules out of ``sys.modules`` and unimportable, for the duration."""
    gone = {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] in HIDDEN}
    finder = _Refuse()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        sys.modules.update(gone)


@contextlib.contextmanager
def fresh_class_tracker():
    """Deserialise classes sent by value as new classes, as another process would. In this
    process cloudpickle would find the originals by their tracker id and overwrite their
    methods with the rebuilt ones (which lack ``super()``'s cell)."""
    import cloudpickle.cloudpickle as cp

    tracked = cp._DYNAMIC_CLASS_TRACKER_BY_ID
    cp._DYNAMIC_CLASS_TRACKER_BY_ID = {}
    try:
        yield
    finally:
        cp._DYNAMIC_CLASS_TRACKER_BY_ID = tracked


class StrictServer:
    """An nnsight backend that serves ``model`` (an nnsight wrapper with weights)."""

    def __init__(self, model: Any):
        self.model = model
        self.requests = 0

    def __call__(self, tracer: Any) -> None:
        from nnsight.ndif import pull_env
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import _saves
        from nnsight.tracing.util import push

        self.requests += 1
        pull_env()
        blob = RequestModel.serialize(tracer, compress=False)
        # deserialize() puts the body's source in linecache under the caller's file name; a
        # server is another process, here it would shadow the real file for later traces.
        filename = tracer.info.frame.f_code.co_filename
        kept = linecache.cache.get(filename)
        try:
            with without_steer():
                with fresh_class_tracker():
                    restored = RequestModel.deserialize(
                        blob, self.model._remoteable_persistent_objects(), compress=False
                    )
                restored.execute(restored.info.code)
                saves = _saves()
                sent = {k: v for k, v in restored.info.frame.f_locals.items() if id(v) in saves}
                buffer = io.BytesIO()
                torch.save(sent, buffer)
        finally:
            if kept is not None:
                linecache.cache[filename] = kept
            else:
                linecache.cache.pop(filename, None)
        result = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=False)
        push(tracer.info.frame, result)


def serve(monkeypatch, model: Any = None) -> StrictServer:
    """Send every remote trace (``remote=`` anything) to a :class:`StrictServer` serving
    ``model``'s wrapper (default: the traced model itself); returns it (``requests`` counts
    what was sent)."""
    from nnsight.modeling.mixins.remotable import Remotable

    server = StrictServer(model.lm if model is not None else None)

    def backend(self: Any, remote: Any, blocking: bool, job_id: Any, verbose: bool) -> Any:
        if server.model is None:
            server.model = self
        return server

    monkeypatch.setattr(Remotable, "_remote_backend", backend)
    return server


def refuse_sending(monkeypatch) -> None:
    """Make any remote trace fail the test: for refusals that must come before one is sent."""
    from nnsight.modeling.mixins.remotable import Remotable

    def backend(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a trace was sent")

    monkeypatch.setattr(Remotable, "_remote_backend", backend)
