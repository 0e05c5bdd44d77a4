"""SIGTERM and SIGINT in a batch job: stop at once, except while an item is being written.

:class:`SignalGuard` replaces the two handlers for the length of a job. A signal raises
:class:`Interrupted` at once (the next Python bytecode) wherever the job is: reading the
manifest, hashing images, loading a model, grouping, inside an optimization step. The one
exception is a :meth:`SignalGuard.deferred` block (committing the items of a finished batch,
rewriting the summary), which runs to its end before the signal takes effect, so nothing is
half-written. A second Ctrl-C inside a deferred block raises :class:`KeyboardInterrupt`.

:class:`Interrupted` derives from :class:`BaseException`, like :class:`KeyboardInterrupt`, so
the ``except Exception`` blocks that turn a broken batch into per-item failures never swallow
it. Before the handlers are installed (while Python imports torch) a signal has its default
effect: the process ends at once, having written nothing.
"""

import contextlib
import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; ``signum`` is the signal (exit status 128 + signum)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"batch: interrupted by signal {signal.Signals(signum).name}")


class SignalGuard:
    """The job's SIGTERM/SIGINT handlers (see the module docstring).

    Example:
        >>> guard = SignalGuard()
        >>> guard.install()
        >>> with guard.deferred():
        ...     pass          # a signal here takes effect when the block ends
        >>> guard.restore()
    """

    def __init__(self):
        self.pending: Optional[int] = None
        self._deferred = 0
        self._quiet = False
        self._old = {}

    def install(self) -> None:
        """Install the handlers (only possible in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread() or self._old:
            return
        for sig in SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}

    def _handler(self, signum, frame):
        if self.pending is not None and signum == signal.SIGINT and (self._deferred or self._quiet):
            raise KeyboardInterrupt
        if self.pending is None:
            self.pending = signum
        if not self._deferred and not self._quiet:
            raise Interrupted(signum)

    @property
    def stopping(self) -> bool:
        """Whether a signal has arrived."""
        return self.pending is not None

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal has arrived."""
        if self.pending is not None:
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def deferred(self):
        """A block a signal does not interrupt; it takes effect when the block ends."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if not self._deferred and not self._quiet:
            self.check()

    @contextlib.contextmanager
    def stopped(self):
        """While the job writes its last summary after a signal: further SIGTERMs are noted
        and ignored (a second Ctrl-C raises KeyboardInterrupt)."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False
