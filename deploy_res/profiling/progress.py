"""The profile run's progress display."""

from __future__ import annotations


class _Display:
    """A rich progress bar over the batch sizes (hidden when quiet), plus the caller's callback."""

    def __init__(self, console, quiet: bool, callback, total: int) -> None:
        self.callback, self.total, self.progress, self.task = callback, total, None, None
        if not quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]profile[/] {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                     TimeElapsedColumn(), console=console, transient=False)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def phase(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=text)
        if self.callback:
            self.callback(text, -1.0)

    def advance(self, completed: float, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, description=f"measuring, {text}")
        if self.callback:
            self.callback(text, completed / self.total)
