#!/usr/bin/env python3
"""Charts of the throughput and latency benches, from their printed output.

    cargo bench --bench throughput | tee target/bench-throughput.txt
    cargo bench --bench latency    | tee target/bench-latency.txt
    scripts/bench-chart.sh          # writes docs/benchmarks/throughput.png, latency.png

Usage: bench-chart.py THROUGHPUT_OUTPUT LATENCY_OUTPUT OUT_DIR
Needs matplotlib (scripts/bench-chart.sh installs it into a virtualenv of its own).
"""

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

THROUGHPUT_LINE = re.compile(
    r"^\((?P<v>[abcd])\) (?P<name>.+?)\s*:\s*(?P<rate>\d+) tasks/s .*?(?P<cpu>[\d.]+) CPU-us/task"
    r"(?: \+ broker (?P<broker>[\d.]+))?"
)
LATENCY_LINE = re.compile(
    r"^\s+(?P<delivery>exactly_once|at_least_once|raw_pipe)\s+(?P<load>\S+)\s+(?P<rate>\d+)\s+\d+\s+\|"
    r"\s+(?P<s50>\d+)ms\s+(?P<s99>\d+)ms\s+(?P<s999>\d+)ms\s+\|"
    r"\s+(?P<v50>\d+)ms\s+(?P<v99>\d+)ms\s+(?P<v999>\d+)ms"
)
NAMES = {
    "a": "raw pipe\n1 in, 1 out",
    "d": "raw transactional\npipe, 3 out",
    "b": "Tidewater\nexactly-once",
    "c": "Tidewater\nat-least-once",
}


def throughput(text: str, out: Path) -> None:
    rows = {}
    for line in text.splitlines():
        m = THROUGHPUT_LINE.match(line.strip())
        if m:
            rows[m["v"]] = (int(m["rate"]), float(m["cpu"]), float(m["broker"] or 0))
    if not rows:
        sys.exit("no throughput lines found (expected '(a) ... tasks/s ... CPU-us/task')")
    order = [v for v in "adbc" if v in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [NAMES[v] for v in order]
    colors = ["#9e9e9e" if v in "ad" else "#1565c0" for v in order]
    left.bar(names, [rows[v][0] for v in order], color=colors)
    left.set_title("no-op tasks per second (higher is better)")
    right.bar(names, [rows[v][1] for v in order], color=colors, label="bench process")
    if any(rows[v][2] for v in order):
        right.bar(
            names,
            [rows[v][2] for v in order],
            bottom=[rows[v][1] for v in order],
            color="#ffb74d",
            label="local broker",
        )
        right.legend(fontsize=8)
    right.set_title("CPU microseconds per task (lower is better)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)


def latency(text: str, out: Path) -> None:
    rows = [m.groupdict() for m in map(LATENCY_LINE.match, text.splitlines()) if m]
    if not rows:
        sys.exit("no latency rows found (expected the table of benches/latency.rs)")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, delivery in zip(axes, ["exactly_once", "at_least_once"]):
        mine = sorted(
            (r for r in rows if r["delivery"] == delivery), key=lambda r: int(r["rate"])
        )
        labels = [f"{r['load']}\n{int(r['rate']):,}/s" for r in mine]
        x = range(len(mine))
        for key, name, style in [
            ("s50", "submit→start p50", "o--"),
            ("s99", "submit→start p99", "o-"),
            ("v50", "submit→visible p50", "s--"),
            ("v99", "submit→visible p99", "s-"),
        ]:
            ax.plot(x, [max(int(r[key]), 1) for r in mine], style, label=name)
        if delivery == "exactly_once":
            # The baseline measured beside each exactly-once load: the raw
            # transactional pipe doing the scheduler's writes.
            raw = {r["load"]: r for r in rows if r["delivery"] == "raw_pipe"}
            points = [(i, raw[r["load"]]) for i, r in enumerate(mine) if r["load"] in raw]
            if points:
                for key, name, style in [
                    ("s99", "submit→received p99", "x:"),
                    ("v99", "submit→visible p99", "+:"),
                ]:
                    ax.plot(
                        [i for i, _ in points],
                        [max(int(m[key]), 1) for _, m in points],
                        style,
                        color="gray",
                        label=f"raw transactional pipe: {name}",
                    )
                ax.legend(fontsize=8)
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(delivery.replace("_", "-"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("milliseconds (log scale)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    out = Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    throughput(Path(sys.argv[1]).read_text(), out)
    latency(Path(sys.argv[2]).read_text(), out)
    print(f"wrote {out / 'throughput.png'} and {out / 'latency.png'}")


if __name__ == "__main__":
    main()
