"""DataLink over HTTP: ``{links}`` for many IDs in one POST, and a "why similar" answer.

    python benchmarks/datalink.py --db vo-ml-demo/miles.duckdb [--table miles.spectra]
                                  [--ids 1000] [--repeat 5]

Starts ``vo-ml serve`` on the archive (``served.start_server``, which stops it by its process
id) and times, in the same run, as a client meets them: the baseline, one TAP query of
``--ids`` publisher DIDs; the links of one ID; the links of ``--ids`` IDs in one POST; and the
"why similar" table of a spectrum and its nearest neighbour. Each figure is the median of
``--repeat`` requests after one warm-up request.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import requests
from served import start_server


def median_ms(repeat: int, request: callable) -> float:
    request()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = request()
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--table", default="miles.spectra")
    parser.add_argument("--ids", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    with start_server(arguments.db) as root:
        query = {"LANG": "ADQL", "RESPONSEFORMAT": "csv", "MAXREC": str(arguments.ids),
                 "QUERY": f"SELECT TOP {arguments.ids} obs_publisher_did FROM {arguments.table}"}
        listing = lambda: requests.post(f"{root}/tap/sync", data=query, timeout=60)  # noqa: E731
        ids = [line.strip('"') for line in listing().text.split()[1:]]
        nearest = requests.get(f"{root}/datalink/similar", timeout=60, params={
            "ID": ids[0], "K": 1, "RESPONSEFORMAT": "csv"}).text.splitlines()[1].split(",")[0]
        baseline = median_ms(arguments.repeat, listing)
        one = median_ms(arguments.repeat, lambda: requests.post(
            f"{root}/datalink/links", data={"ID": ids[:1]}, timeout=60))
        many = median_ms(arguments.repeat, lambda: requests.post(
            f"{root}/datalink/links", data={"ID": ids}, timeout=60))
        why = median_ms(arguments.repeat, lambda: requests.get(
            f"{root}/datalink/why", params={"ID": ids[0], "REF": nearest.strip('"')}, timeout=60))
    print(f"vo-ml serve on {arguments.db} ({arguments.table}), median of {arguments.repeat}")
    print(f"  TAP query of {len(ids)} DIDs (baseline)      {baseline:8.1f} ms")
    print(f"  {{links}} of 1 ID                         {one:8.1f} ms")
    print(f"  {{links}} of {len(ids)} IDs in one POST        {many:8.1f} ms "
          f"({many / baseline:.1f}x the baseline; target <= 1000 ms)")
    print(f"  why similar, a spectrum and its neighbour {why:8.1f} ms (target <= 200 ms)")


if __name__ == "__main__":
    main()
