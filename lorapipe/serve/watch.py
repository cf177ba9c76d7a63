"""Poll the adapter source and apply what changed, without a restart and without touching the base.

Every ``interval_s`` the watcher compares ``source.snapshot()`` (name -> change token) with what the
engine has loaded:

* a loaded adapter whose token changed is *replaced* (requests running on the old version finish on
  it; if the new files fail their checks, the old version keeps serving and the error is logged);
* a name that appeared is *loaded* while the LRU has room (else on first use);
* a loaded name that disappeared is *unloaded*.

Polling mtimes costs a ``stat`` per file and needs nothing from the filesystem (works on NFS and in
containers), which is why it is used rather than inotify.
"""

from __future__ import annotations

import logging
import threading

from lorapipe.errors import LorapipeError
from lorapipe.serve.adapters import AdapterSource
from lorapipe.serve.engine import Engine

log = logging.getLogger(__name__)


class AdapterWatcher:
    def __init__(self, engine: Engine, source: AdapterSource, interval_s: float = 1.0):
        self.engine, self.source, self.interval_s = engine, source, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: dict[str, str] | None = None

    def start(self) -> AdapterWatcher:
        self._previous = self._snapshot()
        self._thread = threading.Thread(target=self._loop, name="lorapipe-adapter-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _snapshot(self) -> dict[str, str]:
        try:
            return self.source.snapshot()
        except (OSError, LorapipeError) as e:
            log.error("adapter watch: cannot list the adapters: %s", e)
            return dict(self._previous or {})

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        """One comparison round (public so tests can drive it without waiting)."""
        now = self._snapshot()
        before = self._previous or {}
        loaded = self.engine.loaded_tokens()
        for name, token in now.items():
            changed = name in loaded and loaded[name] != token
            appeared = name not in before and name not in loaded
            if changed or (appeared and len(loaded) < self.engine.max_loaded_adapters):
                try:
                    self.engine.reload(name)
                    log.info("adapter watch: %s `%s`", "replaced" if changed else "loaded", name)
                except LorapipeError as e:
                    log.error("adapter watch: `%s` not %s: %s", name, "replaced" if changed else "loaded", e)
        for name in set(before) - set(now):
            if name in loaded:
                try:
                    self.engine.unload_from_source(name)
                    log.info("adapter watch: unloaded `%s` (its folder is gone)", name)
                except LorapipeError as e:
                    log.error("adapter watch: `%s` not unloaded: %s", name, e)
        self._previous = now
