"""The fault tests' closing note: how many kill points and faults were tried, and the outcome."""

from faults_helpers import REPORT


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("fault tolerance")
        for line in REPORT:
            terminalreporter.write_line(line)
