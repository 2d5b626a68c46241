"""The bubblewrap sandbox that `script` steps run in (SPEC §5): what a step sees and may use.

A sandboxed step runs as an unprivileged uid in fresh user, mount, PID, IPC, UTS, cgroup and
network namespaces. Its file system is a read-only `/usr` (with the `/bin`, `/lib*` links), a
generated minimal `/etc`, its own `/proc`, a minimal `/dev`, and two size-capped tmpfs mounts:
`/work` (the work directory and `HOME`) and `/tmp`. Nothing of the host's data directory, keys,
database or other attempts is mounted, so none of it exists for the step. Resource limits are
rlimits set by `prlimit` just before the command: CPU seconds and file size per process,
address space per process, processes per uid, open files per process. `--die-with-parent`
and the PID namespace make every process of the step die with the sandbox's leader.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from stellaorch.domain.errors import StepFailed

log = logging.getLogger(__name__)

WORK_DIR = "/work"
# Paths inside the sandbox's own mount namespace, not the host's shared /tmp.
TMP_DIR = "/tmp"  # noqa: S108
_PRLIMIT = "/usr/bin/prlimit"
# Dropping the uid in an exec'd helper rather than in the event loop's spawn: uvloop's
# subprocess support takes no user/group arguments, and preexec_fn is unsafe with threads.
_SETPRIV = "/usr/bin/setpriv"
_MB = 1024 * 1024
_PROBE_TIMEOUT_SECONDS = 10.0
# Host files a program may reasonably need, copied into the sandbox's /etc when they exist;
# never secrets. Copied once per process rather than bound one by one: each bind costs bubblewrap
# ~0.2 ms per step, one bind of the whole directory is one mount.
_HOST_ETC = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
)
# Inside a copied host directory, entries never copied (TLS private keys live here).
_NEVER_COPIED = ("private",)
_TOP_LEVEL_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Limits:
    """The resource limits of one attempt, all enforced by the kernel."""

    cpu_seconds: int
    memory_mb: int
    processes: int
    open_files: int
    file_size_mb: int
    tmp_mb: int
    work_mb: int

    def for_step(self, declared: Mapping[str, float], ceiling: Limits) -> Limits:
        """These defaults overridden by the step's `resources`, never above the ceiling."""
        cpu = int(declared.get("cpuSeconds", self.cpu_seconds) + 0.999)
        memory = int(declared.get("memoryMb", self.memory_mb) + 0.999)
        return Limits(
            cpu_seconds=max(1, min(cpu, ceiling.cpu_seconds)),
            memory_mb=max(1, min(memory, ceiling.memory_mb)),
            processes=self.processes,
            open_files=self.open_files,
            file_size_mb=self.file_size_mb,
            tmp_mb=self.tmp_mb,
            work_mb=self.work_mb,
        )

    def prlimit_argv(self) -> list[str]:
        """`prlimit … --` setting these limits; CPU gets a 1 s hard margin after SIGXCPU."""
        return [
            _PRLIMIT,
            f"--cpu={self.cpu_seconds}:{self.cpu_seconds + 1}",
            f"--as={self.memory_mb * _MB}",
            f"--nproc={self.processes}",
            f"--nofile={self.open_files}",
            f"--fsize={self.file_size_mb * _MB}",
            "--core=0",
            "--",
        ]


@dataclass(frozen=True)
class SandboxConfig:
    """Operator settings of the sandbox (see `Settings`, `STELLA_ORCH_SANDBOX*`)."""

    enabled: bool = True
    bwrap: str = "bwrap"
    uid: int = 65534
    gid: int = 65534
    defaults: Limits = field(default_factory=lambda: Limits(300, 1024, 256, 1024, 256, 64, 256))
    ceiling: Limits = field(default_factory=lambda: Limits(3600, 8192, 256, 1024, 256, 64, 256))

    @classmethod
    def from_settings(cls, settings: Any) -> SandboxConfig:
        """Read the `sandbox*` fields of `stellaorch.settings.Settings`."""
        s = settings
        defaults = Limits(
            s.sandbox_cpu_seconds,
            s.sandbox_memory_mb,
            s.sandbox_processes,
            s.sandbox_open_files,
            s.sandbox_file_size_mb,
            s.sandbox_tmp_mb,
            s.sandbox_work_mb,
        )
        ceiling = Limits(
            max(s.sandbox_max_cpu_seconds, s.sandbox_cpu_seconds),
            max(s.sandbox_max_memory_mb, s.sandbox_memory_mb),
            *(defaults.processes, defaults.open_files, defaults.file_size_mb),
            *(defaults.tmp_mb, defaults.work_mb),
        )
        return cls(
            enabled=s.sandbox == "on",
            bwrap=s.sandbox_bwrap,
            uid=s.sandbox_uid,
            gid=s.sandbox_gid,
            defaults=defaults,
            ceiling=ceiling,
        )


@dataclass(frozen=True)
class SandboxStatus:
    """What `/admin/health` shows: the mode, whether sandboxed steps can run, and why not."""

    mode: str
    available: bool
    reason: str = ""
    uid: int | None = None
    separate_uid: bool = False

    def document(self) -> dict[str, Any]:
        """The JSON form for the health document."""
        return {
            "mode": self.mode,
            "available": self.available,
            "reason": self.reason or None,
            "uid": self.uid,
            "separateUid": self.separate_uid,
        }


class Sandbox:
    """Builds bubblewrap command lines for steps, after checking once that bubblewrap works."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._status: SandboxStatus | None = None
        if not config.enabled:
            log.warning(
                "SANDBOX DISABLED (STELLA_ORCH_SANDBOX=off): script steps run unconfined as "
                "uid %d and can read this host's keys and database",
                os.geteuid(),
            )

    @property
    def enabled(self) -> bool:
        """Whether steps are to run sandboxed (the operator did not turn the sandbox off)."""
        return self.config.enabled

    @property
    def separate_uid(self) -> bool:
        """Steps run as the configured uid only when the worker may switch to it (root)."""
        return os.geteuid() == 0 and self.config.uid != 0

    def status(self) -> SandboxStatus:
        """The sandbox's state, probing bubblewrap on first use (a blocking call of ~10 ms)."""
        if self._status is None:
            self._status = self._probe()
        return self._status

    def require(self) -> None:
        """Raise `SANDBOX_UNAVAILABLE` unless sandboxed steps can run."""
        status = self.status()
        if not status.available:
            message = f"the step sandbox is unavailable: {status.reason}"
            raise StepFailed("SANDBOX_UNAVAILABLE", message, retryable=False)

    def launch(
        self,
        argv: Sequence[str],
        limits: Limits,
        *,
        cwd: str = WORK_DIR,
        binds: Sequence[tuple[str, str]] = (),
        ro_binds: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """The bubblewrap invocation running `argv` under `limits` with `cwd` inside /work."""
        args = [*self._identity_args(), *self._base_args(limits)]
        args += _bind_args("--bind", binds) + _bind_args("--ro-bind", ro_binds)
        if cwd != WORK_DIR:
            args += ["--dir", cwd]
        return [*args, "--remount-ro", "/", "--chdir", cwd, "--", *limits.prlimit_argv(), *argv]

    def _probe(self) -> SandboxStatus:
        if not self.config.enabled:
            return SandboxStatus("off", False, "disabled by the operator (STELLA_ORCH_SANDBOX=off)")
        uid = self.config.uid if self.separate_uid else os.geteuid()
        problem = self._probe_problem()
        if problem:
            log.error("step sandbox unavailable: %s", problem)
        return SandboxStatus("on", not problem, problem, uid, self.separate_uid)

    def _probe_problem(self) -> str:
        """Why a trivial sandboxed command fails, or '' when it works."""
        if shutil.which(self.config.bwrap) is None:
            return f"bubblewrap ({self.config.bwrap!r}) is not installed"
        for tool in (_PRLIMIT, _SETPRIV):
            if not os.access(tool, os.X_OK):
                return f"{tool} (util-linux) is missing"
        argv = self.launch(["/bin/true"], self.config.defaults)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=_PROBE_TIMEOUT_SECONDS,
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bubblewrap could not be started: {exc}"
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            return f"bubblewrap failed ({detail[-1] if detail else done.returncode})"
        return ""

    def blocked_parent(self, path: str) -> str | None:
        """The first directory on `path` the sandbox's uid may not enter (None: all open).

        bubblewrap resolves bind sources as that uid, so a 0700 directory above a bundle
        makes the mount fail; the caller says so instead of a bare exit code.
        """
        if not self.separate_uid:
            return None
        uid, gid = self.config.uid, self.config.gid
        current = os.path.realpath(path)
        chain = [current]
        while current != os.path.dirname(current):
            current = os.path.dirname(current)
            chain.append(current)
        for directory in reversed(chain):
            info = os.stat(directory)
            if info.st_uid == uid:
                allowed = info.st_mode & stat.S_IXUSR
            elif info.st_gid == gid:
                allowed = info.st_mode & stat.S_IXGRP
            else:
                allowed = info.st_mode & stat.S_IXOTH
            if not allowed:
                return directory
        return None

    def _identity_args(self) -> list[str]:
        """`setpriv` dropping root to the sandbox's uid before bubblewrap starts."""
        if not self.separate_uid:
            return []
        uid, gid = self.config.uid, self.config.gid
        return [_SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]

    def _base_args(self, limits: Limits) -> list[str]:
        args = [
            self.config.bwrap,
            *("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts"),
            *("--unshare-net", "--unshare-cgroup-try", "--die-with-parent", "--new-session"),
            *("--hostname", "stella", "--ro-bind", "/usr", "/usr"),
        ]
        for path in _TOP_LEVEL_LINKS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--size", str(limits.tmp_mb * _MB), "--tmpfs", TMP_DIR]
        args += ["--size", str(limits.work_mb * _MB), "--tmpfs", WORK_DIR]
        args += ["--ro-bind", self._etc_dir, "/etc"]
        if not self.separate_uid:
            # Without root the uid cannot change; inside the namespace the step is still nobody.
            args += ["--uid", str(self.config.uid), "--gid", str(self.config.gid)]
        return args

    @cached_property
    def _etc_dir(self) -> str:
        """The sandbox's `/etc`: generated user/host files plus a snapshot of harmless ones."""
        return _minimal_etc(self.config.uid, self.config.gid)


def _bind_args(option: str, binds: Sequence[tuple[str, str]]) -> list[str]:
    """`option SOURCE TARGET` for each bind."""
    return [item for source, target in binds for item in (option, source, target)]


def _minimal_etc(uid: int, gid: int) -> str:
    """Write passwd, group, hosts and nsswitch.conf, and copy `_HOST_ETC`, into a new dir.

    The copy is a snapshot taken at the first sandboxed step: host changes to those files
    (new CA certificates, a new time zone) reach steps after the worker restarts.
    """
    directory = tempfile.mkdtemp(prefix="stella-sandbox-etc-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    files = {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"stella:x:{uid}:{gid}:stella step:{WORK_DIR}:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nstella:x:{gid}:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        "hostname": "stella\n",
    }
    for name, text in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(os.path.join(directory, name), 0o644)
    for path in _HOST_ETC:
        _copy_host_entry(path, os.path.join(directory, os.path.basename(path)))
    # The sandbox's uid must be able to read what is bound; the files hold nothing secret.
    os.chmod(directory, 0o755)  # noqa: S103
    return directory


def _copy_host_entry(source: str, target: str) -> None:
    """Copy one host file, link or directory (links kept as links); skip what is unreadable."""
    try:
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(
                source, target, symlinks=True, ignore=shutil.ignore_patterns(*_NEVER_COPIED)
            )
        elif os.path.lexists(source):
            shutil.copy2(source, target, follow_symlinks=False)
    except OSError as exc:  # shutil.Error is an OSError too
        log.warning("sandbox /etc: %s not copied: %s", source, exc)


def sandbox_cwd(value: str | None) -> str:
    """The step's working directory inside the sandbox: relative to, or under, `/work`."""
    if value is None:
        return WORK_DIR
    path = os.path.normpath(os.path.join(WORK_DIR, value))
    if path != WORK_DIR and not path.startswith(WORK_DIR + "/"):
        raise StepFailed(
            "PARAMS_INVALID",
            f"script: 'cwd' must be inside the step's work directory {WORK_DIR}, got {value!r}",
        )
    return path
