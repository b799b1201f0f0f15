"""Progress on stderr: one updating line on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

BAR = 24


class Progress:
    """`update(label, fraction)` as often as you like; it redraws at most 10 times a second.

    The whole run is `total` scenarios; `fraction` is how far the current one is.
    """

    def __init__(
        self, total: int, stream: TextIO | None = None, tty: bool | None = None, every: float = 5.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = max(1, total)
        self.every = every  # seconds between lines when not a terminal
        self.index = 0
        self.scenario = ""
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_line = ""

    def begin(self, scenario: str) -> None:
        """A new scenario starts."""
        self.scenario = scenario
        self.index += 1
        self.update("starting", 0.0, force=True)

    def update(self, label: str, fraction: float, force: bool = False) -> None:
        """Show `label` and how far the current scenario is (0..1)."""
        now = time.monotonic()
        fraction = min(1.0, max(0.0, fraction))
        overall = (self.index - 1 + fraction) / self.total
        elapsed = now - self.started
        head = f"[{self.index}/{self.total}] {self.scenario}: {label}"
        if self.tty:
            if not force and now - self._last_draw < 0.1:
                return
            filled = round(BAR * overall)
            bar = "#" * filled + "-" * (BAR - filled)
            line = f"\r[{bar}] {overall:4.0%} {elapsed:5.0f}s {head}"
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write(line[: width + 1].ljust(width + 1))
        else:
            if not force and now - self._last_draw < self.every:
                return
            text = f"bench {overall:4.0%} {elapsed:5.0f}s {head} ({fraction:.0%})"
            if text == self._last_line:
                return
            self.stream.write(text + "\n")
            self._last_line = text
        self.stream.flush()
        self._last_draw = now

    def note(self, message: str) -> None:
        """A line that stays (a warning, a fallback)."""
        if self.tty:
            self.stream.write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1) + "\r")
        self.stream.write(message + "\n")
        self.stream.flush()

    def done(self) -> None:
        """End the updating line."""
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"bench finished in {time.monotonic() - self.started:.0f}s\n")
        self.stream.flush()
