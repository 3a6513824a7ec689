"""Pictures of a run: energy over time per process (``monitor --plot``) and
the two monitors side by side (``compare --plot``).

matplotlib (the ``[plot]`` extra) is imported only when a plot is asked for,
with the Agg backend (no display needed), and its absence is checked before
the run starts, so nobody measures for an hour to learn it is missing.

The monitor records interval windows for the plot even without ``-i``
(every second, or duration/50 for short runs: enough points for a curve);
its printed output does not change. Each window holds only the joules of
the processes that spent some, so memory grows with activity, not with the
number of processes ever seen.
"""

import os
from typing import Callable, Dict, List, Optional

SUFFIXES = (".png", ".svg", ".pdf")
TOP = 8
MIN_INTERVAL_S = 0.05


class PlotError(Exception):
    """A clear, one-sentence reason no plot can be made."""


def require_matplotlib():
    """pyplot on the Agg backend, or a PlotError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plots need the Python package matplotlib: pip install 'ebpf-energy[plot]' "
                        "(or apt install python3-matplotlib)") from None
    matplotlib.use("Agg", force=True)
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, smaller
    import matplotlib.pyplot as plt

    return plt


def check_path(path: str) -> str:
    """The output file must end in a known image suffix and its folder must be writable."""
    if not path.lower().endswith(SUFFIXES):
        raise PlotError(f"--plot {path}: the file name must end in {', '.join(SUFFIXES)} (that picks the format)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise PlotError(f"--plot {path}: cannot write in {folder}")
    return path


def default_interval(duration_s: float) -> float:
    """1 s, or duration/50 for runs shorter than 50 s (never under 50 ms)."""
    if duration_s and duration_s > 0:
        return max(MIN_INTERVAL_S, min(1.0, duration_s / 50.0))
    return 1.0


class Timeline:
    """Joules per process per interval, recorded from the driver's ``on_interval``."""

    def __init__(self, path: str, interval_s: float):
        self.path = path
        self.interval_s = interval_s
        self.t: List[float] = []  # interval end, seconds since the run's start
        self.dt: List[float] = []
        self.energy: List[Dict[int, float]] = []
        self.idle: List[float] = []
        self.names: Dict[int, str] = {}
        self._t0: Optional[int] = None

    @classmethod
    def for_run(cls, path: str, duration_s: float, interval_s: Optional[float]) -> "Timeline":
        """Validate everything a plot needs before the run starts."""
        require_matplotlib()
        check_path(path)
        return cls(path, interval_s or default_interval(duration_s))

    def add(self, window, attribution) -> None:
        if self._t0 is None:
            self._t0 = window.start_ns
        self.t.append((window.end_ns - self._t0) / 1e9)
        self.dt.append(window.duration_s)
        self.energy.append({pid: j for pid, j in attribution.energy_j.items() if j > 0})
        self.idle.append(attribution.idle_energy_j)
        for pid, j in attribution.energy_j.items():
            if j > 0 and pid not in self.names:
                p = window.processes[pid]
                self.names[pid] = f"{pid} {p.comm}"

    def hook(self, forward: Optional[Callable] = None) -> Callable:
        """An ``on_interval`` for :func:`ebpf_energy.driver.drive` that records, then calls ``forward``."""

        def on_interval(n, window, attribution, meter_j):
            self.add(window, attribution)
            if forward is not None:
                forward(n, window, attribution, meter_j)

        return on_interval

    def save(self, model: dict, title: str = "ebpf-energy monitor", top: Optional[int] = None,
             ranked: Optional[List[int]] = None) -> str:
        return plot_timeline(self, self.path, model, title=title, top=top, ranked=ranked)


def _model_line(model: dict) -> str:
    from ebpf_energy.report import model_sentence

    return "model: " + model_sentence(model)


def _fit_title(fig, text: str, fontsize: float = 10):
    """The figure's title, each line wrapped until it fits the figure's width
    (a long model sentence or command ran off both edges, cut)."""
    import textwrap

    renderer = fig.canvas.get_renderer()
    room = fig.bbox.width * 0.98
    title = fig.suptitle(text, fontsize=fontsize)
    width = max(len(line) for line in text.splitlines())
    while title.get_window_extent(renderer).width > room and width > 20:
        width = int(width * 0.9)
        title.set_text("\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in text.splitlines()))
    return title


def _series(tl: Timeline, top: int, ranked: Optional[List[int]]):
    """``(label, joules per interval)`` for the ``top`` processes, then the rest and idle.

    ``ranked``: the summary table's order of processes (its filters
    included), so the plot shows the rows the table shows; by default,
    most energy first."""
    totals: Dict[int, float] = {}
    for e in tl.energy:
        for pid, j in e.items():
            totals[pid] = totals.get(pid, 0.0) + j
    order = ranked if ranked is not None else sorted(totals, key=lambda pid: (-totals[pid], pid))
    leaders = [pid for pid in order if pid in totals][:top]
    rows = [(tl.names.get(pid, str(pid)), [e.get(pid, 0.0) for e in tl.energy]) for pid in leaders]
    rest = [sum(e.values()) - sum(e.get(pid, 0.0) for pid in leaders) for e in tl.energy]
    if any(r > 0 for r in rest):
        rows.append((f"other ({max(len(totals) - len(leaders), 0)} processes)", rest))
    if any(i > 0 for i in tl.idle):
        rows.append(("idle", list(tl.idle)))
    return rows


def timeline_figure(tl: Timeline, model: dict, title: str = "ebpf-energy monitor", top: Optional[int] = None,
                    ranked: Optional[List[int]] = None):
    """Power (stacked, W) and cumulative energy (J) over time for the top
    processes (``--top``, else :data:`TOP`): the figure, for the caller to save and close."""
    plt = require_matplotlib()
    rows = _series(tl, TOP if top is None else top, ranked)
    fig, (ax_w, ax_j) = plt.subplots(2, 1, sharex=True, figsize=(10, 7), constrained_layout=True)
    _fit_title(fig, f"{title}: energy over time\n{_model_line(model)}")
    if not tl.t:
        ax_w.text(0.5, 0.5, "no interval was recorded (the run was too short)", ha="center",
                  transform=ax_w.transAxes)
    else:
        x = [0.0] + tl.t  # step="pre": each value holds over the interval ending at its x
        watts = [[j / dt if dt > 0 else 0.0 for j, dt in zip(series, tl.dt)] for _, series in rows]
        if rows:
            ax_w.stackplot(x, *[w[:1] + w for w in watts], labels=[name for name, _ in rows], step="pre",
                           alpha=0.85)
        for name, series in rows:
            acc, cum = 0.0, [0.0]
            for j in series:
                acc += j
                cum.append(acc)
            ax_j.plot(x, cum, label=name)
    ax_w.set_ylabel("power (W), stacked")
    ax_j.set_ylabel("cumulative energy (J)")
    ax_j.set_xlabel("time since start (s)")
    ax_w.grid(alpha=0.3)
    ax_j.grid(alpha=0.3)
    if rows:
        ax_w.legend(loc="upper left", fontsize=8, title="pid comm", title_fontsize=8, ncol=2)
    return fig


def plot_timeline(tl: Timeline, path: str, model: dict, title: str = "ebpf-energy monitor", top: Optional[int] = None,
                  ranked: Optional[List[int]] = None) -> str:
    """:func:`timeline_figure` written to ``path``."""
    plt = require_matplotlib()
    check_path(path)
    try:
        fig = timeline_figure(tl, model, title=title, top=top, ranked=ranked)
    except ValueError as e:
        raise PlotError(f"cannot draw the plot {path}: {e}") from None
    try:
        fig.savefig(path)
    except (OSError, ValueError) as e:
        raise PlotError(f"cannot write the plot {path}: {e}") from None
    finally:
        plt.close(fig)
    return path


def plot_compare(result: dict, path: str) -> str:
    """Bar charts of the ``compare`` numbers: CPU against the truth, energy,
    processes caught, and each monitor's own cost."""
    plt = require_matplotlib()
    check_path(path)
    mons, w = result["monitors"], result["workload"]
    names = [n for n in ("ebpf", "traditional") if n in mons]
    labels = {"ebpf": "eBPF", "traditional": "/proc"}
    colors = {"ebpf": "tab:blue", "traditional": "tab:orange", "truth": "tab:gray"}
    panels = [
        ("workload CPU time (ms)", [(labels[n], mons[n]["workload_cpu_ns"] / 1e6, colors[n]) for n in names]
         + [("truth (rusage)", w["cpu_ns"] / 1e6, colors["truth"])]),
        ("total energy (J)", [(labels[n], mons[n]["total_energy_j"], colors[n]) for n in names]),
        ("workload processes seen", [(labels[n], mons[n]["workload_processes_seen"], colors[n]) for n in names]
         + ([("truth", w["processes"], colors["truth"])] if w.get("processes") else [])),
        ("monitor's own CPU (ms)", [(labels[n], (mons[n]["overhead_cpu_ns"] + mons[n].get("bpf_ns", 0)) / 1e6,
                                     colors[n]) for n in names]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4.2), constrained_layout=True)
    try:
        _fit_title(fig, f"ebpf-energy compare: {w['command']} over {result['duration_s']:.2f} s\n"
                        f"{_model_line(result.get('model', {}))}")
        for ax, (ylabel, bars) in zip(axes, panels):
            xs = [b[0] for b in bars]
            ys = [b[1] for b in bars]
            ax.bar(xs, ys, color=[b[2] for b in bars])
            for i, y in enumerate(ys):
                ax.annotate(f"{y:.4g}", (i, y), ha="center", va="bottom", fontsize=8)
            ax.set_title(ylabel, fontsize=9)
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
        if "bpf_ns" in mons.get("ebpf", {}):
            axes[-1].set_xlabel("eBPF: user space + in-kernel BPF time", fontsize=8)
        fig.savefig(path)
    except (OSError, ValueError) as e:
        raise PlotError(f"cannot write the plot {path}: {e}") from None
    finally:
        plt.close(fig)
    return path
