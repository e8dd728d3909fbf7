"""Run a command and measure it as a user would see it: wall time, peak memory of its whole
process tree, and when its output lines (or other polled events) appeared.

Memory is sampled every `interval` seconds (default 50 ms) in a thread, from
``/proc/PID/status`` of the command and every descendant (forked or spawned workers):

- **RssAnon**: anonymous resident memory (heap, arrays, tensors). It leaves out file-backed
  pages such as a memory-mapped dataset or shared libraries, which the kernel can drop and
  re-read, so it is the memory a process really holds. The sum over the tree at one sample
  is what counts; the peak is the largest such sum.
- **VmRSS**: all resident memory, file-backed pages included. Summed over the tree it counts
  pages that forked workers share more than once; reported for reference.

A peak shorter than the interval can be missed. Linux only (``/proc``).

    from _proc import run_measured
    result = run_measured(["python", "-c", "x = bytearray(10**8)"], timeout=60)
    print(result.peak_anon_mb, result.wall_s)
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Probe = Callable[[], bool]


def _parent_map() -> dict[int, list[int]]:
    """ppid -> child pids of every process on the machine (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 1:
            children.setdefault(int(rest[1]), []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children = _parent_map()
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


def memory_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, VmRSS) of one process in kB; (0, 0) if it is gone or a zombie."""
    anon = rss = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return anon, rss


def tree_memory_kb(root: int) -> tuple[int, int, int]:
    """(sum of RssAnon, sum of VmRSS, number of processes) over `root`'s process tree."""
    anon = rss = count = 0
    for pid in process_tree(root):
        a, r = memory_kb(pid)
        if a or r:
            anon, rss, count = anon + a, rss + r, count + 1
    return anon, rss, count


@dataclass
class Measured:
    """What `run_measured` saw. Times are seconds since just before the process started."""

    command: list[str]
    returncode: int | None
    wall_s: float
    timed_out: bool
    peak_anon_mb: float = 0.0
    peak_rss_mb: float = 0.0
    max_processes: int = 0
    samples: int = 0
    lines: list[tuple[float, str]] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, count: int = 40) -> str:
        return "\n".join(line for _, line in self.lines[-count:])

    def error(self) -> str:
        """One paragraph saying how the command failed (for reports)."""
        how = "timed out" if self.timed_out else f"exit status {self.returncode}"
        return f"{' '.join(self.command)}: {how}\n{self.tail()}"


def run_measured(command: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, timeout: float | None = None,
                 log: str | os.PathLike[str] | None = None,
                 probes: Mapping[str, Probe] | None = None,
                 interval: float = 0.05) -> Measured:
    """Run `command` to completion (or `timeout`), sampling its tree's memory every
    `interval` s. stdout and stderr are merged, time-stamped line by line (a carriage return
    ends a line too, for progress bars) and copied to `log`. Each probe is called every
    sample until it first returns True; the time is kept in `events[name]`. On timeout the
    command's process group (it runs in a new session) gets SIGTERM, then SIGKILL."""
    pending = dict(probes or {})
    result = Measured(list(map(str, command)), None, 0.0, False)
    log_handle = open(log, "w", encoding="utf-8") if log else None  # noqa: SIM115
    start = time.perf_counter()
    proc = subprocess.Popen(result.command, cwd=cwd, env=dict(env) if env else None,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", errors="replace", start_new_session=True)
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            result.lines.append((time.perf_counter() - start, line.rstrip("\n")))
            if log_handle:
                log_handle.write(line)
                log_handle.flush()

    def sample() -> None:
        while True:
            anon, rss, count = tree_memory_kb(proc.pid)
            result.peak_anon_mb = max(result.peak_anon_mb, anon / 1024)
            result.peak_rss_mb = max(result.peak_rss_mb, rss / 1024)
            result.max_processes = max(result.max_processes, count)
            result.samples += 1
            now = time.perf_counter() - start
            for name, probe in list(pending.items()):
                try:
                    hit = probe()
                except OSError:
                    hit = False
                if hit:
                    result.events[name] = now
                    del pending[name]
            if done.wait(interval):
                return

    reader = threading.Thread(target=read, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        result.timed_out = True
        _kill_group(proc)
    except BaseException:  # Ctrl-C: do not leave the benchmark's children running
        _kill_group(proc)
        raise
    finally:
        result.wall_s = time.perf_counter() - start
        done.set()
        sampler.join()
        reader.join(timeout=10)
        if log_handle:
            log_handle.close()
    # A probe that first holds after the exit (e.g. a file flushed at the end) still counts,
    # at the exit time.
    for name, probe in pending.items():
        try:
            if probe():
                result.events[name] = result.wall_s
        except OSError:
            pass
    result.returncode = proc.returncode
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this module started, then SIGKILL what is left."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def file_has_line(path: Path) -> Probe:
    """A probe: `path` exists and holds at least one complete line."""

    def probe() -> bool:
        try:
            if path.stat().st_size == 0:
                return False
        except FileNotFoundError:
            return False
        with path.open("rb") as handle:
            return b"\n" in handle.read(1 << 16)

    return probe
