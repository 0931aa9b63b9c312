"""One run per run folder: a lock file that names its holder and is recognised as stale when the holder is gone.

``run.lock`` in the run folder holds the holder's host, process id, process start time and command. It is created
complete or not at all (written under a temporary name, then hard-linked into place, which fails when a lock
exists). A second run refuses with the holder's name. A lock is stale when its holder is gone: on the same host, no
process with that id and start time runs any more (a run killed with ``kill -9`` or by the out-of-memory killer);
on another host (a shared folder), its heartbeat, the file's modification time renewed every ``HEARTBEAT_S`` by a
background thread, is older than ``STALE_AFTER_S``. A renewal that fails is retried at the next beat. A stale lock
is moved aside and replaced, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from rich.markup import escape

from gapless.console import console
from gapless.errors import InputError, RunError

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


def process_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of process ``pid`` (Linux), None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc(5), counted after the command name in parentheses


def pid_namespace() -> str:
    """This host and pid namespace: process ids are comparable only between processes that share both."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` runs and, where start times can be read, is the same process (pids are reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    stat = process_stat(pid)
    if stat is None:
        return True
    state, now = stat
    return state != "Z" and (start is None or now == start)  # a zombie has ended; it only awaits its parent


def describe(holder: dict[str, Any] | None, age_s: float) -> str:
    if holder is None:
        return f"an unreadable lock last renewed {age_s:.0f} s ago"
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{command}, since {holder.get('since')}"


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder's lock for the block; :meth:`acquire` raises if it is held."""

    def __init__(self, run_dir: str | Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.token = uuid.uuid4().hex
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> tuple[dict[str, Any] | None, float]:
        """(the lock's content, or None when unreadable; seconds since its last heartbeat). Raises
        FileNotFoundError when there is no lock."""
        age = time.time() - self.path.stat().st_mtime
        try:
            return json.loads(self.path.read_text()), age
        except (OSError, ValueError):
            return None, age

    @staticmethod
    def is_stale(holder: dict[str, Any] | None, age_s: float) -> bool:
        """A holder in this pid namespace is checked by its process; any other by the age of its heartbeat."""
        if holder is not None and holder.get("namespace") == pid_namespace():
            return not process_alive(int(holder.get("pid", -1)), holder.get("start"))
        return age_s > STALE_AFTER_S

    def refuse_if_held(self) -> None:
        """Raise :class:`RunError` naming the holder when a live run holds the lock (a check, nothing taken)."""
        try:
            holder, age = self.holder()
        except OSError:  # no lock, or no folder to hold one: the run's own checks report the latter
            return
        if not self.is_stale(holder, age):
            raise self.held_error(holder, age)

    def held_error(self, holder: dict[str, Any] | None, age: float) -> RunError:
        return RunError(
            f"{self.path.parent}: another run uses this folder: {describe(holder, age)}. Wait for it to end or "
            "stop it, or choose another --out (a lock whose holder is gone is replaced by itself)"
        )

    def acquire(self) -> None:
        content = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "namespace": pid_namespace(),
            "start": (process_stat(os.getpid()) or ("", None))[1],
            "token": self.token,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv[:1] + sys.argv[1:8])[:300],
        }
        tmp = self.path.with_name(f"{LOCK_NAME}.{self.token}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(content))
        except OSError as exc:
            raise InputError(f"{self.path.parent}: cannot write in the run folder ({exc.strerror or exc})") from exc
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic, and fails when a lock exists
                    break
                except FileExistsError:
                    self._break_if_stale()
                except OSError as exc:  # e.g. a file system without hard links (EPERM, ENOTSUP)
                    raise InputError(f"{self.path.parent}: cannot take the run folder's lock "
                                     f"({exc.strerror or exc}); choose an --out on another file system") from exc  # fmt: skip
            else:
                raise RunError(f"{self.path}: could not take the run folder's lock (other runs keep taking it)")
        finally:
            tmp.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def _break_if_stale(self) -> None:
        """Move a stale lock aside (a warning); raise :class:`RunError` naming the holder of a live one."""
        try:
            holder, age = self.holder()
        except FileNotFoundError:
            return  # released meanwhile: try again
        if not self.is_stale(holder, age):
            raise self.held_error(holder, age)
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another run moved it first
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        if (moved or {}).get("token") != (holder or {}).get("token"):
            # Another run replaced the stale lock between the check and the rename: put its lock back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        else:
            message = escape(f"{self.path}: replaced a stale lock ({describe(holder, age)}; no longer running)")
            console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        """Renew the lock's modification time every ``heartbeat_s`` until released. A renewal that fails (a shared
        folder gone for a moment, the lock moved) is a warning and the next one is tried; the heartbeat ends early only
        when the lock holds another run's token (that run took the folder over: its lock is not ours to renew)."""
        failing = False
        while not self._stop.wait(self.heartbeat_s):
            try:
                if json.loads(self.path.read_text()).get("token") != self.token:
                    message = escape(f"{self.path}: another run took over this run's lock; it is no longer renewed")
                    console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
                    return
                os.utime(self.path)
                failing = False
            except (OSError, ValueError, AttributeError) as exc:
                if not failing:
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
                    message = escape(f"{self.path}: cannot renew the lock's heartbeat ({reason}); trying again")
                    console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
                failing = True

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                if json.loads(self.path.read_text()).get("token") == self.token:
                    self.path.unlink()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
