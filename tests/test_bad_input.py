"""Bad numeric values are refused when the options are parsed: one line, exit 2, nothing started.

A table: the command line, and what the error must say. NaN, infinity, values
too large to mean anything, and negative ones, for every numeric option.
"""

import pytest
from click.testing import CliRunner

from ebpf_energy.cli import main

CASES = [
    (["monitor", "-d", "inf"], "'-d' / '--duration': 'inf' is not a finite number"),
    (["monitor", "-d", "nan"], "'nan' is not a finite number"),
    (["monitor", "-d", "1e12"], "'1e12' is out of range (from 0 to 31,536,000 s)"),
    (["monitor", "-d", "-1"], "'-1' is out of range"),
    (["monitor", "-d", "1", "-p", "nan"], "'-p' / '--power': 'nan' is not a finite number"),
    (["monitor", "-d", "1", "-p", "inf"], "'inf' is not a finite number (more than 0 and at most 10,000 W)"),
    (["monitor", "-d", "1", "-p", "1e308"], "'1e308' is out of range"),
    (["monitor", "-d", "1", "-p", "0"], "'0' is out of range"),
    (["monitor", "-i", "nan"], "'-i' / '--interval': 'nan' is not a finite number"),
    (["monitor", "-i", "0"], "'0' is out of range"),
    (["monitor", "-d", "1", "--max-tasks", "99999999999"], "'--max-tasks': '99999999999' is out of range"),
    (["monitor", "-d", "1", "--max-tasks", "1.5"], "'1.5' is not a whole number"),
    (["monitor", "-d", "1", "--pid", "99999999"], "'--pid': '99999999' is out of range (from 1 to 4,194,304)"),
    (["monitor", "-d", "1", "--min-slice-us", "1e30"], "'1e30' is not a whole number"),
    (["monitor", "-d", "1", "--top", "0"], "'--top': '0' is out of range"),
    (["traditional", "-d", "inf"], "'inf' is not a finite number"),
    (["traditional", "-i", "nan"], "'nan' is not a finite number"),
    (["compare", "-d", "nan"], "'nan' is not a finite number"),
    (["compare", "-d", "0"], "'0' is out of range"),
    (["exporter", "--interval", "inf"], "'--interval': 'inf' is not a finite number"),
    (["exporter", "--interval", "nan"], "'nan' is not a finite number"),
    (["exporter", "--linger", "nan"], "'nan' is not a finite number"),
    (["exporter", "--max-tasks", "99999999999"], "out of range"),
    (["load", "x.o", "-d", "inf"], "'inf' is not a finite number"),
    (["run", "--budget-joules", "nan", "--", "true"], "'--budget-joules': 'nan' is not a finite number"),
    (["run", "--carbon-intensity", "nan", "--", "true"], "'nan' is not a finite number"),
    (["run", "--carbon-intensity", "1e400", "--", "true"], "'1e400' is not a finite number"),
    (["run", "--repeat", "0", "--", "true"], "'--repeat': '0' is out of range"),
    (["calibrate", "--min-r2", "nan"], "'nan' is not a finite number"),
    (["calibrate", "--rounds", "-3"], "'-3' is out of range"),
    (["run", "-o", "/nonexistent/dir/x", "--", "true"], "its folder /nonexistent/dir does not exist"),
    (["exporter", "--listen", "127.0.0.1:99999"], "'--listen': wants HOST:PORT"),
    (["dashboard", "--listen", ""], "'--listen': wants HOST:PORT"),
    (["calibrate", "--cpu-cgroup", "/tmp"], "/tmp is not a cgroup v2 folder (no cpu.stat)"),
    # never appended to a file that is not an emissions.csv, nor found missing only after the run
    (["monitor", "-d", "1", "--codecarbon-csv", "/etc/passwd"], "is not a CodeCarbon emissions.csv"),
    (["monitor", "-d", "1", "--codecarbon-csv", "/nonexistent/x.csv"], "its folder /nonexistent does not exist"),
    (["run", "--codecarbon-csv", "/etc", "--", "true"], "is a directory"),
    # a profile or plot that cannot be used is found before the run, not after it
    (["monitor", "-d", "1", "--profile", "/nonexistent"], "'--profile': no calibration profile at /nonexistent"),
    (["traditional", "-d", "1", "--profile", "/nonexistent"], "no calibration profile at /nonexistent"),
    (["run", "--profile", "/nonexistent", "--", "true"], "no calibration profile at /nonexistent"),
    (["compare", "-d", "1", "--profile", "/nonexistent"], "no calibration profile at /nonexistent"),
    (["compare", "-d", "1", "--plot", "/nonexistent-dir/x.png"], "its folder /nonexistent-dir does not exist"),
    (["monitor", "-d", "1", "--plot", "/nonexistent-dir/x.png"], "its folder /nonexistent-dir does not exist"),
    (["monitor", "-d", "1", "--plot", "/tmp/x.txt"], "must end in .png, .svg, .pdf"),
    # options that could match nothing
    (["monitor", "-d", "1", "--comm", ""], "Invalid value for --comm: an empty name matches no process"),
    (["traditional", "-d", "1", "--comm", "sh", "--comm", ""], "an empty name matches no process"),
    (["monitor", "-d", "1", "--by", "container", "--runtime-root", "/nonexistent"],
     "'--runtime-root': Directory '/nonexistent' does not exist"),
    (["traditional", "-d", "1", "--by", "pod", "--runtime-root", "/nonexistent"],
     "'--runtime-root': Directory '/nonexistent' does not exist"),
    (["run", "--by", "container", "--runtime-root", "/etc/passwd", "--", "true"], "'/etc/passwd' is a file"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_numbers_are_one_line_usage_errors(argv, message):
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 2, r.output
    assert message in r.output, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("content, why", [("{", "is not valid JSON"), ("[1]", "is not a calibration profile"),
                                          ('{"idle_watts": 1}', "is not a calibration profile")])
def test_a_profile_that_is_no_profile_is_a_usage_error_naming_the_file(tmp_path, content, why):
    path = tmp_path / "p.json"
    path.write_text(content)
    r = CliRunner().invoke(main, ["monitor", "-d", "1", "--profile", str(path)])
    assert r.exit_code == 2, r.output
    assert f"'--profile': {path} {why}" in r.output, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
