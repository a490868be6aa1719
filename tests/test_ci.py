"""Log tails and the bounded failure report sent to a box."""

from __future__ import annotations

from bot.github.ci_logs import (
    MAX_CHECKS,
    MAX_REPORT_CHARS,
    FailedCheck,
    describe_failures,
    log_tail,
)


def test_tail_keeps_the_last_100_whole_lines_without_colours_or_timestamps() -> None:
    log = "".join(f"2024-05-01T10:00:00.1234567Z \x1b[31mline {n}\x1b[0m\r\n" for n in range(300))
    assert log_tail(log) == "\n".join(f"line {n}" for n in range(200, 300))


def test_tail_is_cut_to_8_kib_at_a_line_start() -> None:
    tail = log_tail("".join(f"{n:04d} {'é' * 200}\n" for n in range(50)))
    assert len(tail.encode()) <= 8 * 1024
    assert tail.startswith(("003", "004")) and tail.endswith("0049 " + "é" * 200)


def test_report_is_bounded_whatever_fails() -> None:
    failed = [
        FailedCheck(f"job {n} " + "n" * 300, "failure", "x" * 8_000 + f"\nerror {n}")
        for n in range(MAX_CHECKS + 5)
    ]
    report = describe_failures("a" * 40, failed)
    assert len(report) <= MAX_REPORT_CHARS
    assert report.endswith("(5 more failing checks are not shown.)")
    # Every shown check keeps the end of its log, where the error is.
    assert all(f"\nerror {n}\n" in report for n in range(MAX_CHECKS))
    assert "job 10 " not in report


def test_a_check_without_log_says_so() -> None:
    report = describe_failures("a" * 40, [FailedCheck("build", "timed_out")])
    assert report.endswith(
        "### build (timed_out)\n\nThe last lines of its log:\n\n(no log could be read)"
    )
