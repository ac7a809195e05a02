"""The workdir: created with one clear error when it cannot be, and held by one process at a time.

`<workdir>/lock` holds the host, PID and start time of the process training in it. It is created with
O_CREAT | O_EXCL, atomic on local filesystems and on NFSv3+; a second process finds it and stops with
one line naming the holder. A lock left by a process that died (kill -9, a crash) is taken over when
its holder is on this host and no longer runs (its PID is gone, or belongs to a process started at
another time). A lock from another host cannot be checked from here: the message says how to remove it
once that job is known to be gone. Workdirs given as URIs (gs://...) are not locked (no atomic create):
the start logs a warning.
"""

import errno
import json
import os
import socket
import time

from absl import logging
import jax

from aplx import rundir


class WorkdirError(RuntimeError):
  """The workdir cannot be used (locked by another process, not a directory, not writable)."""


def create(workdir: str) -> None:
  """Creates `workdir` (and its parents); WorkdirError naming the problem if the filesystem refuses."""
  try:
    rundir.path(workdir).mkdir(parents=True, exist_ok=True)
  except FileExistsError:
    raise WorkdirError(f"--workdir {workdir} exists and is not a directory: pass a directory.") from None
  except OSError as e:
    raise WorkdirError(f"cannot create --workdir {workdir} ({describe_os_error(e)}).") from None


def describe_os_error(e: OSError) -> str:
  """An OSError in words, with what to do for the usual ones."""
  fixes = {
    errno.ENOSPC: "the disk is full: free space and rerun the same command",
    errno.EROFS: "the filesystem is read-only: pass a writable --workdir",
    errno.EACCES: "permission denied: pass a --workdir you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EDQUOT: "the disk quota is exceeded: free space and rerun the same command",
  }
  return f"{e.strerror or e}{'; ' + fixes[e.errno] if e.errno in fixes else ''}"


def _start_time(pid: int) -> str | None:
  """The start time of process `pid` in clock ticks since boot (/proc), None if it does not run."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rpartition(")")[2].split()[19]
  except (OSError, IndexError):
    return None


def _alive(holder: dict) -> bool:
  """Whether the lock's holder may still run (always True for another host: it cannot be checked)."""
  if holder.get("host") != socket.gethostname():
    return True
  if not os.path.exists("/proc/self/stat"):  # No /proc: only whether the PID exists.
    try:
      os.kill(holder["pid"], 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      return True
    return True
  return _start_time(holder["pid"]) == holder.get("start")


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds `<workdir>/lock` (process 0 of a job), or raises WorkdirError."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "lock")
    self.held = False
    self.active = jax.process_index() == 0 and "://" not in workdir
    if jax.process_index() == 0 and not self.active:
      logging.warning("%s is not a local path: no lock keeps a second job from writing to it.", workdir)

  def check(self) -> None:
    """WorkdirError if another process that still runs holds the lock (nothing is written): lets a
    second job stop at once, before it loads data."""
    holder = self._holder() if self.active and os.path.exists(self.path) else None
    if holder is not None and _alive(holder):
      raise self._busy(holder)

  def _busy(self, holder: dict) -> WorkdirError:
    return WorkdirError(
      f"{os.path.dirname(self.path)} is in use by process {holder.get('pid')} on {holder.get('host')} "
      f"(since {holder.get('since')}): one run per workdir. If that job is gone (another host's cannot "
      f"be checked from here), remove {self.path}."
    )

  def __enter__(self):
    if not self.active:
      return self
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid())}
    me["since"] = time.strftime("%Y-%m-%d %H:%M:%S")
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if holder is None and time.time() - os.path.getmtime(self.path) < 10:
          holder = {"pid": "?", "host": "?", "since": "just now"}  # Being written: not stale.
        if holder is not None and _alive(holder):
          raise self._busy(holder) from None
        logging.warning("Taking over the lock of a process that no longer runs: %s", holder)
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      except OSError as e:
        raise WorkdirError(
          f"cannot write to --workdir {os.path.dirname(self.path)} ({describe_os_error(e)})."
        ) from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return self
    raise WorkdirError(f"could not take {self.path}: another process keeps taking it.")

  def _holder(self) -> dict | None:
    """The lock's contents; None if unreadable (a holder killed between create and write: stale)."""
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def __exit__(self, *exc):
    if self.held:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      self.held = False
