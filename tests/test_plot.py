"""Plots: real monitor and compare runs make valid PNG and SVG files that name
the model and the top processes; a missing matplotlib or a bad file name is a
clear error before anything runs."""

import json
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ebpf_energy.plot import PlotError, default_interval, require_matplotlib

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ebpf_energy(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ebpf_energy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def busy(seconds):
    code = f"import time\nend=time.monotonic()+{seconds}\nwhile time.monotonic()<end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def svg_text(path):
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return " ".join(t.strip() for t in root.itertext() if t.strip())


@pytest.mark.kernel
def test_monitor_plot_png_from_a_real_run(tmp_path):
    out = tmp_path / "energy.png"
    kid = busy(2.0)
    try:
        r = ebpf_energy("monitor", "-d", "1.5", "-p", "10", "--json", "--plot", str(out))
    finally:
        kid.kill()
        kid.wait()
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # the output is unchanged: one JSON object, no interval lines
    assert report["schema"] == 1 and report["processes"]
    assert f"plot written to {out}" in r.stderr
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 500 and height >= 400
    assert len(data) > 20_000  # a drawn figure, not an empty canvas


@pytest.mark.kernel
def test_monitor_plot_svg_names_model_and_top_processes(tmp_path):
    out = tmp_path / "energy.svg"
    kid = busy(2.0)
    try:
        r = ebpf_energy("monitor", "-d", "1.5", "-p", "10", "-i", "0.5", "--json", "--plot", str(out))
    finally:
        kid.kill()
        kid.wait()
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) >= 3 and lines[-1]["summary"] is True  # -i still prints its JSON Lines
    text = svg_text(out)
    assert "fixed (watts_per_cpu=10.0)" in text and "energy over time" in text
    assert "power (W), stacked" in text and "cumulative energy (J)" in text
    top = lines[-1]["processes"][0]
    assert f"{top['pid']} {top['comm']}" in text  # the legend names the top process by pid and comm
    assert out.stat().st_size > 20_000


@pytest.mark.kernel
def test_compare_plot(tmp_path):
    out = tmp_path / "compare.svg"
    r = ebpf_energy("compare", "-d", "1", "--workload", "mixed", "-p", "10", "--plot", str(out), timeout=120)
    assert r.returncode == 0, r.stderr
    text = svg_text(out)
    for label in ("eBPF", "/proc", "truth (rusage)", "workload CPU time (ms)", "total energy (J)",
                  "builtin:mixed", "fixed (watts_per_cpu=10.0)"):
        assert label in text, label


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from ebpf_energy.commands.compare import compare
    from ebpf_energy.commands.monitor import monitor

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    with pytest.raises(PlotError, match=r"pip install 'ebpf-energy\[plot\]'"):
        require_matplotlib()
    for cmd, args in ((monitor, ["-d", "0.1", "-p", "10"]), (compare, ["-d", "0.1", "-p", "10"])):
        r = CliRunner().invoke(cmd, args + ["--plot", str(tmp_path / "x.png")])
        assert r.exit_code == 1, r.output
        assert "matplotlib" in r.output and "Traceback" not in r.output
        assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name, why", [("x.txt", "must end in .png, .svg, .pdf"),
                                       ("no/such/dir/x.png", "does not exist")])
@pytest.mark.parametrize("command", ["monitor", "compare"])
def test_bad_plot_path_fails_before_the_run(tmp_path, name, why, command):
    r = ebpf_energy(command, "-d", "30", "-p", "10", "--plot", str(tmp_path / name), timeout=20)
    assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr
    assert "measuring" not in r.stderr  # nothing was loaded or run


def test_default_interval():
    assert default_interval(0) == 1.0 and default_interval(600) == 1.0
    assert default_interval(5) == pytest.approx(0.1) and default_interval(0.5) == 0.05


def _timeline(n_processes=6):
    from ebpf_energy.plot import Timeline

    tl = Timeline("unused.png", 1.0)
    tl.t, tl.dt, tl.idle = [1.0, 2.0], [1.0, 1.0], [0.5, 0.5]
    tl.energy = [{pid: float(pid) for pid in range(1, n_processes + 1)}] * 2
    tl.names = {pid: f"{pid} proc{pid}" for pid in range(1, n_processes + 1)}
    return tl


LONG_MODEL = {"name": "rapl-split", "idle_watts": 3.2, "watts_per_cpu_second": 7.991,
              "class_watts": {"P": 9.1, "E": 4.2}, "profile": "/root/.config/ebpf-energy/a/long/path/profile.json",
              "measured": True, "meter": "powercap (intel-rapl:0 package, dram, psys)"}


def test_top_n_draws_n_process_series_then_the_rest_and_idle():
    from ebpf_energy.plot import timeline_figure

    plt = require_matplotlib()
    fig = timeline_figure(_timeline(6), LONG_MODEL, top=3)
    try:
        labels = [line.get_label() for line in fig.axes[1].get_lines()]
        assert labels == ["6 proc6", "5 proc5", "4 proc4", "other (3 processes)", "idle"]
        assert len(fig.axes[0].collections) == 5  # the stacked power: the same five
    finally:
        plt.close(fig)
    fig = timeline_figure(_timeline(6), LONG_MODEL, top=2, ranked=[1, 99, 4, 6])  # the table's order and rows
    try:
        assert [line.get_label() for line in fig.axes[1].get_lines()][:3] == ["1 proc1", "4 proc4", "other (4 processes)"]
    finally:
        plt.close(fig)


def test_a_long_title_is_wrapped_to_fit_the_figure(tmp_path):
    """The model sentence ran off both edges of the figure, cut."""
    from ebpf_energy.plot import timeline_figure

    plt = require_matplotlib()
    fig = timeline_figure(_timeline(2), LONG_MODEL)
    try:
        title = fig._suptitle
        box = title.get_window_extent(fig.canvas.get_renderer())
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1, (box, fig.bbox)
        assert "profile.json" in title.get_text() and len(title.get_text().splitlines()) >= 3
    finally:
        plt.close(fig)


@pytest.mark.kernel
def test_monitor_plot_follows_top(tmp_path, monkeypatch):
    """--top N reaches the plot, with the table's rows in the table's order."""
    from click.testing import CliRunner

    import ebpf_energy.plot as plot
    from ebpf_energy.commands.monitor import monitor

    seen = {}
    real = plot.plot_timeline

    def spy(tl, path, model, **kw):
        seen.update(kw)
        return real(tl, path, model, **kw)

    monkeypatch.setattr(plot, "plot_timeline", spy)
    out = tmp_path / "x.svg"
    r = CliRunner().invoke(monitor, ["-d", "0.3", "-p", "10", "--json", "--top", "3", "--plot", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert seen["top"] == 3 and out.exists()
    assert seen["ranked"][:3] == [p["pid"] for p in report["processes"]]  # the JSON lists the table's top 3
