"""Stopping a child process the way every dev tool here does it: the one copy of that code.

SIGTERM first so the child runs its shutdown path (a service drains and closes its SQLite
file, Mosquitto closes its listeners), SIGKILL only when it does not exit in time, and
always reaped, so no test, benchmark or demo leaves a zombie or a running process behind.
"""

from __future__ import annotations

import subprocess


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float, kill_timeout: float = 10.0
) -> int:
    """Terminate ``proc``, wait ``timeout`` s, else kill it; returns its exit code.
    Harmless on a process that already exited (``terminate`` then does nothing)."""
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(kill_timeout)
