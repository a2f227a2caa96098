#!/usr/bin/env python3
"""abrows_report.py OUT PAIRS OLD NEW: the table scripts/abrows.sh prints.

Reads OUT/{old,new}-{1..PAIRS}/results.json (scripts/bench.sh's output) and
prints, per row id both trees measured in every pair: the median of each
tree's per-run medians, the NEW/OLD ratio of each pair, and their median.
"""

import json
import statistics
import sys
from pathlib import Path


def main():
    out, pairs, old, new = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sides = {}
    order = []
    for side in ("old", "new"):
        for i in range(1, pairs + 1):
            data = json.loads((out / f"{side}-{i}" / "results.json").read_text())
            for row in data["rows"]:
                if row.get("median") is None:
                    continue
                key = row["id"]
                if key not in order:
                    order.append(key)
                sides.setdefault(key, {}).setdefault(side, {})[i] = (row["median"], row["unit"], row["label"])
    print(f"OLD = {old}, NEW = {new}; {pairs} pairs, OLD then NEW in each\n")
    print("| row | OLD | NEW | unit | NEW/OLD per pair | median |")
    print("|---|---:|---:|---|---|---:|")
    for key in order:
        o, n = sides[key].get("old", {}), sides[key].get("new", {})
        both = [i for i in range(1, pairs + 1) if i in o and i in n and o[i][0] > 0]
        if not both:
            print(f"| {key} | not measured by both trees | | | | |")
            continue
        ratios = [n[i][0] / o[i][0] for i in both]
        unit = n[both[0]][1]
        print(
            f"| {key} | {statistics.median(o[i][0] for i in both):.3g} "
            f"| {statistics.median(n[i][0] for i in both):.3g} | {unit} "
            f"| {' '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f}× |"
        )


if __name__ == "__main__":
    main()
