"""A memory cgroup of our own, so the kernel's OOM killer acts on the processes we put in
it when they outgrow its limit: what happens to a worker that runs out of memory.

It is created inside the harness's own cgroup (so it is ours, and nested limits still
hold), with cgroup v1's memory controller or cgroup v2's ``memory.max``; root (or a
delegated hierarchy) is needed to write them. What a process moved in had already
allocated stays charged where it was (cgroup v2, and v1 on kernels without
``memory.move_charge_at_immigrate``, e.g. 6.x): only what it allocates after the move
counts against the limit, and :meth:`MemoryCgroup.usage` says what is charged here.
:meth:`close` moves any process left back out and removes the cgroup.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["CgroupError", "MemoryCgroup", "unavailable"]


class CgroupError(RuntimeError):
    """No memory cgroup can be made here (the message says why)."""


def _mounts() -> dict[str, Path]:
    """``{"v1": memory controller mount, "v2": unified mount}`` as far as they exist."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fstype, _source, options = [*after.split(), "", ""][:3]
        mount_point = Path(before.split()[4])
        if fstype == "cgroup" and "memory" in options.split(","):
            found["v1"] = mount_point
        elif fstype == "cgroup2":
            found["v2"] = mount_point
    return found


def _own_path(version: str) -> str:
    """This process's cgroup in that hierarchy, from ``/proc/self/cgroup``."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if (version == "v1" and "memory" in controllers.split(",")) or (
            version == "v2" and _id == "0"
        ):
            return path.lstrip("/")
    return ""


def _parent() -> tuple[str, Path]:
    """The hierarchy to use and the cgroup to create ours in."""
    mounts = _mounts()
    if "v1" in mounts:
        return "v1", mounts["v1"] / _own_path("v1")
    if "v2" in mounts:
        parent = mounts["v2"] / _own_path("v2")
        controllers = parent / "cgroup.controllers"
        if controllers.exists() and "memory" in controllers.read_text().split():
            return "v2", parent
        raise CgroupError(f"cgroup v2 at {parent} does not offer the memory controller")
    raise CgroupError("no cgroup memory controller is mounted (neither v1 nor v2)")


def unavailable() -> str | None:
    """Why no memory cgroup can be made here (None: one can)."""
    try:
        _version, parent = _parent()
    except (CgroupError, OSError) as e:
        return str(e)
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable (the memory cgroup needs root or a delegated cgroup)"
    return None


class MemoryCgroup:
    """A new memory cgroup named ``name`` (created now; :meth:`close` removes it)."""

    def __init__(self, name: str) -> None:
        self.version, self.parent = _parent()
        self.path = self.parent / name
        try:
            self.path.mkdir()
            if self.version == "v1":
                # Bring a moved process's charged pages along, so the limit counts from its
                # use; kernels that dropped charge moving (6.x) refuse, and then only what
                # it allocates after the move is charged here.
                with contextlib.suppress(OSError):
                    self._write("memory.move_charge_at_immigrate", "3")
            else:
                with contextlib.suppress(OSError):  # already enabled, or the parent's call
                    (self.parent / "cgroup.subtree_control").write_text("+memory")
                with contextlib.suppress(OSError):  # no swap controller: no swap to use
                    self._write("memory.swap.max", "0")
        except OSError as e:
            self.close()
            raise CgroupError(f"cannot set up the memory cgroup {self.path}: {e}") from e

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) in."""
        self._write("cgroup.procs", str(pid))

    def usage(self) -> int:
        """Bytes charged now."""
        name = "memory.usage_in_bytes" if self.version == "v1" else "memory.current"
        return int(self._read(name))

    def limit(self, limit: int) -> None:
        """Set the memory limit in bytes; beyond it the kernel reclaims, then OOM-kills."""
        if self.version == "v1":
            self._write("memory.limit_in_bytes", str(limit))
            with contextlib.suppress(OSError):  # no swap accounting: there is no swap either
                self._write("memory.memsw.limit_in_bytes", str(limit))
        else:
            self._write("memory.max", str(limit))

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer has killed in here."""
        text = self._read("memory.oom_control" if self.version == "v1" else "memory.events")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak(self) -> int | None:
        """The most bytes ever charged (None where the kernel does not say)."""
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int(self._read(name))
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        """The processes in it now."""
        try:
            return [int(p) for p in self._read("cgroup.procs").split()]
        except OSError:
            return []

    def close(self) -> None:
        """Move what is left back into the parent and remove the cgroup."""
        if not self.path.exists():
            return
        for pid in self.pids():
            with contextlib.suppress(OSError):
                (self.parent / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            self.path.rmdir()
