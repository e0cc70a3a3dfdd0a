"""Prints how many hostile inputs the run tried, so that the number can be quoted."""

from hostile_helpers import TALLY


def pytest_terminal_summary(terminalreporter) -> None:
    if not TALLY:
        return
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(TALLY.items()))
    terminalreporter.write_line(f"hostile inputs tried: {sum(TALLY.values())} ({counts})")
