"""The runner worker's fence, as the worker itself sets it up (standard library only, like
``worker_main.py``, which imports it before it reads anything; arx imports it for
``seccomp_program``).

Under bwrap (``fence.py``, arx's side) the namespaces, the read-only view of the files, the
capabilities and a first seccomp filter are in place before the worker starts: ``fence`` adds
the resource limits and a seccomp filter that also refuses exec, and reports what it sees from
inside (``observed``). Where bwrap cannot run, it applies the native layers itself, each where
the platform allows it, and reports which held:

- ``rlimits``: address space, open files, file size, no core dumps, no new processes
  (``RLIMIT_NPROC``, for a user other than root), and a CPU-time limit per call;
- ``pdeathsig``: killed with arx (Linux);
- ``netns``: a new network namespace, so no network at all (Linux, with the right to create one);
- ``landlock``: files readable only under the Python installation, writable only in its own
  directory, nothing executable, no TCP, no signals out (Linux >= 5.13 with Landlock enabled);
- ``seccomp``: no fork, clone, exec, socket, ptrace, kill, io_uring, namespaces, memfd_create
  (Linux, x86_64 and aarch64).
"""

import ctypes
import os
import platform
import resource
import struct
import sys

#: the pure-computation modules a runner may use, imported before the files are fenced off
PRELOAD = ("bisect", "collections", "copy", "dataclasses", "enum", "functools", "heapq",
           "itertools", "json", "math", "random", "re", "statistics", "typing")
_X32 = 0x40000000
_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
#: syscalls the worker may not make (EPERM): new processes and programs, sockets, tracing and
#: signalling others, io_uring, namespaces and mounts, kernel keys, module loading, anonymous
#: memory files (memfd_create, memfd_secret: memory that no address-space limit counts)
_DENIED = {
    "x86_64": (56, 57, 58, 59, 322, 435, 41, 53, 101, 62, 200, 234, 129, 297, 424, 434, 438,
               310, 311, 272, 308, 165, 166, 155, 161, 321, 298, 425, 426, 427, 248, 249, 250,
               175, 313, 246, 169, 323, 319, 447),
    "aarch64": (220, 221, 281, 435, 198, 199, 117, 129, 130, 131, 138, 240, 424, 434, 438, 270,
                271, 97, 268, 40, 39, 41, 51, 280, 241, 425, 426, 427, 217, 218, 219, 105, 273,
                104, 142, 282, 279, 447),
}
#: execve and execveat, of those
_EXEC = {"x86_64": (59, 322), "aarch64": (221, 281)}


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _rlimits(settings: dict) -> bool:
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, settings["files"]),
              (resource.RLIMIT_FSIZE, settings["file_bytes"])]
    if settings["memory"] and sys.platform != "darwin":  # macOS does not enforce RLIMIT_AS
        limits.append((resource.RLIMIT_AS, settings["memory"]))
    if os.geteuid() != 0:  # root ignores RLIMIT_NPROC (seccomp covers it)
        limits.append((resource.RLIMIT_NPROC, 0))
    ok = True
    for which, value in limits:
        try:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            ok = False
    return ok


def _pdeathsig(libc, parent: int) -> bool:
    if libc is None or not sys.platform.startswith("linux"):
        return False
    if libc.prctl(1, 9, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG, SIGKILL
        return False
    if os.getppid() != parent:  # arx went before the signal was armed
        os._exit(3)
    return True


def _netns(libc) -> bool:
    if libc is None or not sys.platform.startswith("linux"):
        return False
    for flags in (0x40000000, 0x10000000 | 0x40000000):  # CLONE_NEWNET, + CLONE_NEWUSER
        if libc.unshare(flags) == 0:
            return True
    return False


def _syscall(libc, *args):
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(*args)


def _landlock(libc, tmp: str) -> bool:
    """Files: read-only under the Python installation, read-write in ``tmp``, no exec; no TCP;
    no signals or abstract sockets outside the worker (as far as the kernel's ABI goes)."""
    if libc is None or not sys.platform.startswith("linux"):
        return False
    abi = _syscall(libc, 444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    if abi < 1:
        return False
    fs = (1 << 13) - 1
    fs |= (1 << 13) if abi >= 2 else 0
    fs |= (1 << 14) if abi >= 3 else 0
    fs |= (1 << 15) if abi >= 5 else 0
    attr = struct.pack("Q", fs)
    if abi >= 4:
        attr += struct.pack("Q", 0b11)  # bind and connect TCP
    if abi >= 6:
        attr += struct.pack("Q", 0b11)  # scoped: abstract unix sockets, signals
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _syscall(libc, 444, buf, len(attr), 0)
    if ruleset < 0:
        return False
    read = (1 << 2) | (1 << 3)
    roots = {os.path.dirname(os.__file__), sys.prefix, sys.base_prefix, sys.exec_prefix}
    rules = [(p, read) for p in sorted(roots) if p and os.path.isdir(p)]
    rules.append((tmp, fs & ~1))
    try:
        for path, access in rules:
            fd = os.open(path, getattr(os, "O_PATH", os.O_RDONLY))
            rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
            added = _syscall(libc, 445, ruleset, 1, rule, 0)
            os.close(fd)
            if added != 0:
                return False
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return False
        return _syscall(libc, 446, ruleset, 0) == 0
    finally:
        os.close(ruleset)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_program(machine: str, allow_exec: bool = False):
    """The seccomp BPF program (bytes of ``struct sock_filter``) that refuses ``_DENIED`` with
    EPERM on ``machine``, and every call of another ABI; None for an architecture it does not
    know. ``allow_exec``: leave execve alone (bwrap loads the filter just before it runs
    Python)."""
    if machine not in _ARCH:
        return None
    deny = 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
    allow = 0x7FFF0000
    numbers = [nr for nr in _DENIED[machine] if not (allow_exec and nr in _EXEC[machine])]
    prog = [(0x20, 0, 0, 4),  # ld arch
            (0x15, 1, 0, _ARCH[machine]),  # jeq native: skip the deny
            (0x06, 0, 0, deny),
            (0x20, 0, 0, 0)]  # ld nr
    if machine == "x86_64":
        prog.append((0x35, len(numbers) + 1, 0, _X32))  # jge x32 -> deny
    for k, nr in enumerate(numbers):
        prog.append((0x15, len(numbers) - k, 0, nr))  # jeq nr -> deny
    prog += [(0x06, 0, 0, allow), (0x06, 0, 0, deny)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def _seccomp(libc) -> bool:
    program = seccomp_program(platform.machine())
    if libc is None or not sys.platform.startswith("linux") or program is None:
        return False
    n = len(program) // 8
    filters = (_SockFilter * n).from_buffer_copy(program)
    fprog = _SockFprog(n, filters)
    if libc.prctl(38, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, FILTER


def _status() -> dict:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _outside_uid() -> int | None:
    """The uid this process is outside its user namespace (None when it cannot tell)."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            rows = [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except (OSError, ValueError):
        return None
    uid = os.getuid()
    for inside, outside, count in rows:
        if inside <= uid < inside + count:
            return outside + uid - inside
    return None


def _only_loopback() -> bool:
    try:
        with open("/proc/net/dev", encoding="ascii") as f:
            names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    except OSError:
        return False
    return names == ["lo"]


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def observed(settings: dict) -> dict:
    """What bwrap's fence looks like from inside, before any runner code runs."""
    status = _status()
    caps = ("CapInh", "CapPrm", "CapEff", "CapAmb")
    tmp = os.statvfs(settings["tmp"])
    return {
        "bwrap": True,
        "uid": _outside_uid() not in (None, 0),
        "caps": all(int(status.get(k, "1"), 16) == 0 for k in caps),
        "no_new_privs": status.get("NoNewPrivs", "").strip() == "1",
        "pidns": os.getpid() <= 2,
        "netns": _only_loopback(),
        "readonly": _read_only("/") and _read_only(sys.prefix),
        "tmpfs": tmp.f_blocks * tmp.f_frsize <= settings["tmp_bytes"],
        "seccomp": status.get("Seccomp", "").strip() == "2",
    }


def fence(settings: dict) -> dict:
    """Apply every layer this platform allows; what held, by name. Under bwrap (``settings
    ["fence"]``) the namespaces, the view of the files, the capabilities and seccomp are in
    place already: the worker adds its resource limits and reports what it sees."""
    libc = _libc()
    for name in PRELOAD:
        __import__(name)
    if settings.get("fence") == "bwrap":
        held = observed(settings)
        held["rlimits"] = _rlimits(settings)
        held["seccomp"] = held["seccomp"] and _seccomp(libc)  # and now no exec either
        return held
    held = {"netns": _netns(libc)}
    held["pdeathsig"] = _pdeathsig(libc, settings["parent"])
    held["rlimits"] = _rlimits(settings)
    held["landlock"] = _landlock(libc, settings["tmp"])
    held["seccomp"] = _seccomp(libc)
    return held
