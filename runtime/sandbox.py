"""The worker's filesystem sandbox: Linux Landlock, applied before any user code is imported.

A local cloud worker runs as the user, next to the local cloud's home (other apps' keys, the
service token) and the user's own secrets (`~/.runpod/config.toml`). The supervisor hands each
worker a policy in its environment: `FLASH_SANDBOX_READ` and `FLASH_SANDBOX_WRITE` (path lists,
`os.pathsep`-separated; the engine builds them, it knows the home's layout). The worker turns
them into a Landlock ruleset and restricts itself (and every process it starts) to exactly
those paths, read(-execute) or read-write, plus its own `/proc/<pid>`. Everything else --
the home outside its own build and state, the user's home, other processes' `/proc` entries --
is denied by the kernel. With ABI >= 6 signals and abstract unix sockets are scoped to the
sandbox too.

Landlock is unprivileged (it needs `no_new_privs`, which is set here). Where it is missing (not
Linux, an old kernel, disabled at boot) the worker runs unrestricted and says so once.
`FLASH_SANDBOX=off` turns the sandbox off. The syscalls are called through ctypes: PyPI's
`landlock` binding is a pre-release and the interface is three syscalls.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "ISOLATION_HEADER",
    "MODE_ENV",
    "READ_ENV",
    "WRITE_ENV",
    "SandboxPolicy",
    "SandboxResult",
    "apply",
    "isolation",
    "landlock_abi",
]

MODE_ENV = "FLASH_SANDBOX"
READ_ENV = "FLASH_SANDBOX_READ"
WRITE_ENV = "FLASH_SANDBOX_WRITE"
# The response header of a worker's `/ping` saying what isolation the worker itself applied
# (`landlock-vN` or `none`): the truth for status, where the service's environment is a guess.
ISOLATION_HEADER = "x-flash-isolation"

# Syscall numbers: the same on every architecture (they were added after the tables merged).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights (uapi/linux/landlock.h), with the ABI that introduced them.
_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
# 1 << 4 .. 1 << 12: remove dir/file, make char/dir/reg/sock/fifo/block/sym (ABI 1)
_ABI1_RIGHTS = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6

_READ = _EXECUTE | _READ_FILE | _READ_DIR
# Rights that make sense on a regular file (the kernel rejects directory rights on one).
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE


@dataclass(frozen=True)
class SandboxPolicy:
    """The paths a worker may read(-execute) and read-write; all others are denied."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxPolicy | None:
        """The policy the supervisor passed; None when it passed none (no sandbox asked)."""
        if READ_ENV not in environ and WRITE_ENV not in environ:
            return None
        return cls(_paths(environ.get(READ_ENV, "")), _paths(environ.get(WRITE_ENV, "")))

    def to_env(self) -> dict[str, str]:
        """The environment variables carrying this policy to a worker."""
        return {READ_ENV: os.pathsep.join(self.read), WRITE_ENV: os.pathsep.join(self.write)}


@dataclass(frozen=True)
class SandboxResult:
    """What `apply` did: the isolation in force and, when none, why."""

    isolation: str
    reason: str = ""
    skipped: list[str] = field(default_factory=list)


def _paths(raw: str) -> tuple[str, ...]:
    return tuple(item for item in raw.split(os.pathsep) if item.strip())


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable."""
    if platform.system() != "Linux":
        return 0
    try:
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        version = libc.syscall(
            ctypes.c_long(_SYS_CREATE_RULESET),
            ctypes.c_void_p(None),
            ctypes.c_size_t(0),
            ctypes.c_uint32(_CREATE_RULESET_VERSION),
        )
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


def isolation(environ: Mapping[str, str]) -> str:
    """What workers started with `environ` get: `none` or `landlock-vN`."""
    if environ.get(MODE_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return "none"
    abi = landlock_abi()
    return f"landlock-v{abi}" if abi > 0 else "none"


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed))
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _handled(abi: int) -> int:
    rights = _ABI1_RIGHTS
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    return rights


def _raise(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


def apply(policy: SandboxPolicy) -> SandboxResult:
    """Restrict this process and its future children to `policy` (irreversible).

    Paths that do not exist are skipped (listed in the result). Returns isolation `none` with
    the reason when Landlock is unavailable; raises OSError when it is there but fails.
    """
    abi = landlock_abi()
    if abi <= 0:
        reason = "Landlock is not available on this system"
        if platform.system() != "Linux":
            reason = f"Landlock needs Linux (this is {platform.system()})"
        return SandboxResult("none", reason)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    handled = _handled(abi)
    attr = _RulesetAttr(handled, 0, 0)
    size = ctypes.sizeof(ctypes.c_uint64)  # ABI 1-3 know handled_access_fs only
    if abi >= 4:
        size = 2 * ctypes.sizeof(ctypes.c_uint64)
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = ctypes.sizeof(_RulesetAttr)
    ruleset = libc.syscall(
        ctypes.c_long(_SYS_CREATE_RULESET),
        ctypes.byref(attr),
        ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        _raise("landlock_create_ruleset")
    skipped: list[str] = []
    try:
        own_proc = f"/proc/{os.getpid()}"
        for path, rights in (
            [(p, _READ) for p in policy.read]
            + [(own_proc, _READ)]
            + [(p, handled) for p in policy.write]
        ):
            if not _add_rule(libc, int(ruleset), path, rights & handled):
                skipped.append(path)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            _raise("prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(ruleset), 0) != 0:
            _raise("landlock_restrict_self")
    finally:
        os.close(int(ruleset))
    return SandboxResult(f"landlock-v{abi}", skipped=skipped)


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> bool:
    """Allow `rights` beneath `path`; False when the path does not exist."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        result = libc.syscall(
            ctypes.c_long(_SYS_ADD_RULE),
            ctypes.c_int(ruleset),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
        if result != 0:
            if ctypes.get_errno() == errno.EINVAL:
                return False  # e.g. a path on a filesystem Landlock cannot tag
            _raise(f"landlock_add_rule {path}")
    finally:
        os.close(fd)
    return True
