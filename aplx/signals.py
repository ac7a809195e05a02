"""Stop requests: SIGTERM and SIGINT caught from process start, as a flag the trainer polls.

`experiments.main` calls `install()` before its heavy imports, so a signal during start-up (imports,
data, restore) is not lost: the trainer stops before its first step with status 'preempted' and exit
status 75. The trainer also installs it itself (library use). The first SIGINT (Ctrl-C) stops like
SIGTERM (a checkpoint, then exit 75); a second SIGINT interrupts at once (KeyboardInterrupt).
Signal handlers can only be installed from the main thread; elsewhere `install` does nothing.
"""

import signal
import threading

_requested: str | None = None  # The name of the first signal received, until `clear()`.


def _handle(signum, frame):
  global _requested
  del frame
  if _requested is not None and signum == signal.SIGINT:
    raise KeyboardInterrupt
  _requested = _requested or signal.Signals(signum).name


def install() -> bool:
  """Catches SIGTERM and SIGINT from now on (main thread only). Returns whether it did."""
  if threading.current_thread() is not threading.main_thread():
    return False
  for sig in (signal.SIGTERM, signal.SIGINT):
    if signal.getsignal(sig) is not _handle:
      signal.signal(sig, _handle)
  return True


def requested() -> str | None:
  """'SIGTERM' or 'SIGINT' once one was received (after `install`), else None."""
  return _requested


def clear() -> None:
  """Forgets a received signal (the trainer, once it has stopped for it)."""
  global _requested
  _requested = None
