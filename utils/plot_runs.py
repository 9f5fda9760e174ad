"""Plot training curves from one or more runs' `metrics.csv` (as written by `ppo_mjx.py`).

Usage:
    python -m utils.plot_runs runs/cpu_learn__1__1795692530 --out docs/images/ppo_cpu_curve.png
    python -m utils.plot_runs docs/gpu/ppo_h100_metrics.csv --out docs/images/ppo_h100_wallclock.png \
        --x wallclock --metrics charts/episodic_return --title "PPO, one H100"
    python -m utils.plot_runs runs/a runs/b --labels baseline wide --out docs/images/compare.png

Each argument is a run folder (its `metrics.csv` is read) or a CSV file. One subplot per metric, side by side,
against env steps (`--x steps`, default) or wall-clock minutes since training started (`--x wallclock`, compile
time excluded). Blank cells (no episode ended in that iteration) are skipped. Curves are a rolling mean over
`--smooth` points, with the raw values drawn faintly behind.
"""

import argparse
import csv
import os
from pathlib import Path

import numpy as np

from utils.cli import fail

DEFAULT_METRICS = ["charts/episodic_return", "charts/episodic_length", "reward/tracking_lin_vel"]


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a metrics.csv as float arrays (blank cells → NaN). Exits with one line on a bad file."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        fail(f"{path}: no such file")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or "global_step" not in rows[0]:
        fail(f"{path}: empty or not a metrics.csv (needs a header with global_step and at least one row)")
    header, body = rows[0], [r for r in rows[1:] if r]
    bad = next((i + 2 for i, r in enumerate(body) if len(r) != len(header)), None)
    if bad:
        fail(f"{path}: line {bad} has a different number of cells than the header's {len(header)}")
    try:
        table = np.array([[float(c) if c.strip() else np.nan for c in r] for r in body], dtype=float)
    except ValueError as e:
        fail(f"{path}: non-numeric cell ({e})")
    return {name: table[:, i] for i, name in enumerate(header)}


def wallclock_minutes(cols: dict[str, np.ndarray], source: str) -> np.ndarray:
    """Minutes since the first iteration started: SPS is (steps since start) / (seconds since start)."""
    if "charts/SPS" not in cols:
        fail(f"{source}: --x wallclock needs a charts/SPS column")
    step = cols["global_step"]
    # The loop's start step is one batch before the first row (0 for a fresh run, the resume step otherwise).
    batch = step[1] - step[0] if len(step) > 1 else step[0]
    return (step - (step[0] - batch)) / cols["charts/SPS"] / 60.0


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing rolling mean over up to `window` points (shorter at the start)."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    n = np.minimum(np.arange(1, len(y) + 1), window)
    return (c[1:] - c[np.arange(1, len(y) + 1) - n]) / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (containing metrics.csv) or CSV files")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: folder or file name)")
    p.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS, help="CSV columns, one subplot each")
    p.add_argument("--x", choices=["steps", "wallclock"], default="steps", help="x-axis: env steps or minutes")
    p.add_argument("--title", default="", help="figure title; a second line after a literal \\n is set small")
    p.add_argument("--smooth", type=int, default=5, help="rolling-mean window in points (1 = none)")
    a = p.parse_args(argv)
    if a.labels and len(a.labels) != len(a.runs):
        fail(f"--labels has {len(a.labels)} names for {len(a.runs)} runs")
    if not a.out.lower().endswith(".png"):
        fail(f"--out {a.out}: must end in .png")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    labels = a.labels or [Path(r).stem if Path(r).suffix == ".csv" else Path(r).name for r in a.runs]
    runs = [read_metrics(r) for r in a.runs]
    for src, cols in zip(a.runs, runs):
        missing = [m for m in a.metrics if m not in cols]
        if missing:
            fail(f"{src}: no column {', '.join(missing)} (has: {', '.join(c for c in cols if '/' in c)})")

    n = len(a.metrics)
    fig, axes = plt.subplots(1, n, figsize=({1: 7.0, 2: 10.0}.get(n, 4.0 * n), 4.0), dpi=100, squeeze=False)
    for ax, metric in zip(axes[0], a.metrics):
        for i, (src, cols, label) in enumerate(zip(a.runs, runs, labels)):
            x = wallclock_minutes(cols, src) if a.x == "wallclock" else cols["global_step"]
            y = cols[metric]
            ok = np.isfinite(y) & np.isfinite(x)
            if not ok.any():
                continue
            ax.plot(x[ok], y[ok], color=f"C{i}", alpha=0.2, lw=0.8)
            ax.plot(x[ok], smooth(y[ok], max(a.smooth, 1)), color=f"C{i}", lw=1.6, label=label)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("wall-clock minutes (after compile)" if a.x == "wallclock" else "env steps")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if a.x == "steps":
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, 10M instead of overlapping digits
    if len(runs) > 1:
        axes[0][0].legend(fontsize=8)
    if a.title:
        head, _, sub = a.title.replace("\\n", "\n").partition("\n")
        fig.suptitle(head, fontsize=12, y=0.99)
        if sub:
            fig.text(0.5, 0.925, sub, ha="center", fontsize=7.5, family="monospace", color="0.3")
    fig.tight_layout()
    if a.title:
        fig.subplots_adjust(top=0.84 if sub else 0.87)  # room for the title lines above the subplot titles

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
