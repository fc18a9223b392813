"""Where authproxy's time goes per request: a py-spy profile of one worker under wrk load.

``py-spy record --format raw`` writes one line per distinct stack: ``frame;frame;...;leaf N``
with frames like ``load (authproxy/sessions/manager.py:112)``. :func:`aggregate` turns those
into self time (the leaf) and inclusive time (anywhere on the stack, counted once per sample),
as shares of the samples in which the worker was running Python.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_FRAME_RE: Final = re.compile(r"^(?P<name>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE_MARKERS: Final = ("site-packages/", "lib/python3")
# the process's entry chain is on every stack that reaches the event loop: it says nothing
_ENTRY_FRAMES: Final = ("authproxy/__main__.py:", "authproxy/cli.py:", "authproxy/server.py:")


@dataclass(frozen=True)
class Profile:
    samples: int
    self_time: Counter[str]
    inclusive: Counter[str]

    def top_self(self, n: int) -> list[tuple[str, float]]:
        return [(frame, count / self.samples) for frame, count in self.self_time.most_common(n)]

    def top_inclusive(self, n: int, prefix: str = "") -> list[tuple[str, float]]:
        ranked = [
            (frame, count)
            for frame, count in self.inclusive.most_common()
            if frame.startswith(prefix) and not frame.startswith(_ENTRY_FRAMES)
        ]
        return [(frame, count / self.samples) for frame, count in ranked[:n]]


def short_frame(frame: str) -> str:
    """``name (path:line)`` as ``module/file.py:name``, with the interpreter's prefixes removed."""
    match = _FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in _SITE_MARKERS:
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    if "/authproxy/" in path:
        path = "authproxy/" + path.rsplit("/authproxy/", 1)[1]
    return f"{path}:{match['name']}"


def aggregate(raw: str) -> Profile:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # the first frames name the process and thread, not code
        frames = [short_frame(f) for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return Profile(max(samples, 1), self_time, inclusive)


def render(profile: Profile, cpu_us_per_request: float, n: int = 20) -> str:
    """Markdown: the top authproxy functions (inclusive) and the top leaves (self), with µs/request."""

    def rows(items: list[tuple[str, float]]) -> str:
        return "\n".join(
            f"| `{frame}` | {share * 100:.1f}% | {share * cpu_us_per_request:.0f} |" for frame, share in items
        )

    header = "| function | share of CPU samples | ≈ µs per request |\n|---|---|---|\n"
    return (
        f"{profile.samples} samples; per-request figures scale the share by the measured "
        f"{cpu_us_per_request:.0f} µs of CPU per request. py-spy sees Python frames only: time in the "
        "event loop's C code shows as `asyncio/runners.py:Runner.run`, and socket writes as "
        "`aiohttp/http_writer.py:StreamWriter._write`.\n\n"
        "Inclusive (authproxy code, with everything it calls):\n\n"
        + header
        + rows(profile.top_inclusive(n, "authproxy/"))
        + "\n\nSelf (where the CPU actually is):\n\n"
        + header
        + rows(profile.top_self(n))
        + "\n"
    )


def py_spy_path() -> str | None:
    """The py-spy command, on PATH or beside this interpreter (``.venv/bin/pip install py-spy``)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


async def start_py_spy(py_spy: str, pid: int, seconds: float, raw_path: Path) -> asyncio.subprocess.Process:
    """py-spy recording ``pid`` for ``seconds`` into ``raw_path`` (collapsed stacks, 250 Hz)."""
    return await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(pid), "--rate", "250", "--duration", f"{seconds:g}",
        "--format", "raw", "--output", str(raw_path), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
