"""Ingest's worker processes: a worker that starts late does not hang the ingest (issue 14, where
`vo-ml ingest` of one file from an SSA service hung in CI on a busy 2-core machine)."""

from __future__ import annotations

import sys
import textwrap

from conftest import MILES, run

#: Three one-file ingests with two workers, in one process in which every second process forked
#: starts 5 s late, as a worker does when a busy CPU reaches it late; every signal the process
#: sends to another is reported.
LATE_WORKERS = textwrap.dedent("""
    import os
    import sys
    import time

    forks = 0


    def count_fork():
        global forks
        forks += 1


    def report_signal(event, arguments):
        if event == "os.kill":
            print(f"sent signal {arguments[1]} to process {arguments[0]}", file=sys.stderr, flush=True)


    if __name__ == "__main__":
        os.register_at_fork(before=count_fork, after_in_child=lambda: time.sleep(5 * (forks % 2 == 0)))
        sys.addaudithook(report_signal)
        from vo_ml.cli import main

        spectrum, folder = sys.argv[1:]
        for run in range(3):
            main(["ingest", spectrum, "--db", f"{folder}/late{run}.duckdb", "--config", "miles",
                  "--workers", "2"])
""")


def test_ingests_whose_second_worker_starts_late_end_without_killing_it(tmp_path):
    """The old pool forked its workers from the reader thread and had Linux kill each when that
    thread ended, which it does before the pool shuts down: the idle worker died holding the
    pool's queue lock, and the late worker, not yet signed up for the signal, waited for that lock
    forever, and the shutdown with it; or the pool saw the death first and killed the late worker.
    Which of the two happens, or neither (the idle worker reads its stop message before the
    signal lands), is a race, hence three runs."""
    script = tmp_path / "late_workers.py"
    script.write_text(LATE_WORKERS)
    result = run([sys.executable, script, MILES / "MILES_res2.50_star_m0067V.fits", tmp_path],
                 timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("1 ingested, 0 already there, 0 failed") == 3, result.stdout
    assert "sent signal" not in result.stderr
