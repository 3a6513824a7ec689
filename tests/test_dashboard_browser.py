"""The dashboard's page in a real browser: Debian's chromium, headless,
driven by chromedriver through Selenium.

A burner started while the page is open must appear in the legend under its
name in one of the two refreshes after it started (counted in refreshes, read
from /metrics, not in seconds), its series must grow, the model line must
say what /metrics says, pause must hold the chart, the browser console must
stay free of errors, and after the server restarts on the same port the page
must pick up the new run by itself. The screenshot in the README
(docs/dashboard.png) is taken here.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ebpf_energy.exporter import _info_labels
from ebpf_energy.report import model_sentence

from test_dashboard import RunningDashboard
from test_exporter import value

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "docs" / "dashboard.png"
BURNER = "dash-burner"  # the comm the kernel gives the burner (its executable's name)

pytestmark = pytest.mark.kernel


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (make deps installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ebpf-energy-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={profile}", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER)
    driver = None
    try:
        driver = webdriver.Chrome(options=opts, service=service)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        service.stop()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(what, cond, deadline_s=120.0):
    """Poll ``cond`` until it returns something true; a generous deadline, not a measurement."""
    start = time.monotonic()
    while time.monotonic() < start + deadline_s:
        got = cond()
        if got:
            print(f"{time.monotonic() - start:6.1f} s until {what}")  # shown when the test fails
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def page(driver, expr):
    return driver.execute_script(f"return {expr};")


def legend_names(driver):
    return page(driver, "Array.from(document.querySelectorAll('#legend tr')).map("
                        "tr => tr.querySelector('.name').textContent)")


def burner_frames(driver, key):
    """(seq, cumulative joules) of every frame the page holds in which the burner has a row."""
    return page(driver, f"ebpfEnergy.frames.map(f => [f.seq, (f.rows.find(r => r.key === '{key}') || {{}}).j])"
                        ".filter(p => p[1] !== undefined)")


def scrape(d):
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(d.get("/metrics")[2].decode()):
        for s in fam.samples:
            out.setdefault(s.name, (fam.type, {}))[1][frozenset(s.labels.items())] = s.value
    return out


def severe(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def start_burner(tmp_path):
    """A shell loop under the name BURNER (a symlink's name becomes the comm), at
    nice -20 so it is among the top rows of every refresh on a shared machine."""
    exe = tmp_path / BURNER
    exe.symlink_to(shutil.which("sh"))
    return subprocess.Popen([str(exe), "-c", "while :; do :; done"], preexec_fn=lambda: os.nice(-20))


def test_the_page_in_a_real_browser(browser, tmp_path):
    from ebpf_energy.rapl.simulated import SimulatedPowercap

    driver = browser
    burner = None
    sim = SimulatedPowercap().__enter__()  # a meter (simulated: this machine has no RAPL)
    d = RunningDashboard("--interval", "1", "--top", "12", "--powercap-root", sim.root)
    try:
        driver.get(d.base + "/")
        wait_for("the first frame on the chart", lambda: page(driver, "ebpfEnergy.status === 'live' && "
                                                                      "ebpfEnergy.drawnSeq > 0"))
        run1 = page(driver, "ebpfEnergy.run")
        # the burner: in the legend under its name within two refreshes of its start
        r0 = value(scrape(d), "ebpf_energy_refreshes_total")
        burner = start_burner(tmp_path)
        key = str(burner.pid)
        wait_for("the burner in the legend", lambda: BURNER in legend_names(driver))
        first_seq = burner_frames(driver, key)[0][0]
        assert first_seq <= r0 + 2, (first_seq, r0)  # in refresh r0+1 or r0+2
        assert page(driver, f"ebpfEnergy.firstDrawn['{key}']") == first_seq  # drawn with the frame that had it
        row = page(driver, f"document.querySelector('#legend tr[data-key=\"{key}\"] .detail').textContent")
        assert row == f"pid {burner.pid}"
        # its series grows: more frames with it, more joules each time, more points on the chart
        points = f"(function(){{var c = ebpfEnergy.chartData, i = c.layers.indexOf('{key}');" \
                 f" return i < 0 ? 0 : c.raw[i].filter(w => w > 0).length;}})()"
        n0 = page(driver, points)
        wait_for("the burner's series to grow", lambda: len(burner_frames(driver, key)) >= 4 and
                 page(driver, points) > n0)
        js = [j for _, j in burner_frames(driver, key)]
        assert all(b > a for a, b in zip(js, js[1:])), js
        # the model line says what /metrics says. The model can change from one refresh to the
        # next (the RAPL split learns idle power as it runs), so compare one refresh: the model
        # of frame R, where R is the refresh /metrics showed, is its info labels; and the line
        # on the page is the reports' sentence for the model of the frame it shows.
        m = scrape(d)
        r = int(value(m, "ebpf_energy_refreshes_total"))
        (info,) = m["ebpf_energy_model_info"][1]
        labels = dict(info)
        assert labels["name"] == "rapl" and labels["measured"] == "true" and labels["simulated"] == "true"
        wait_for(f"frame {r} on the page", lambda: page(driver, f"ebpfEnergy.frames.some(f => f.seq === {r})"))
        as_sent = "JSON.stringify(ebpfEnergy.frames.find(f => f.seq === {}).model)"  # the model's own key order
        assert _info_labels(json.loads(page(driver, as_sent.format(r)))) == labels
        text, shown = page(driver, f"[document.getElementById('model').textContent, "
                                   f"{as_sent.format('ebpfEnergy.shownSeq')}]")
        assert text == "model: " + model_sentence(json.loads(shown))
        assert page(driver, "document.getElementById('drops').hidden")  # no drops: no banner
        # the meter: a line against the total, a row in the legend, the package's watts
        meter = page(driver, "ebpfEnergy.frames[ebpfEnergy.frames.length - 1].meter")
        assert meter["w"] > 0 and meter["j"] > 0 and "meter" in legend_names(driver)
        # a time window to pick, and pause: frames still arrive, the chart holds still
        driver.find_element("css selector", "#window option[value='60']").click()
        assert page(driver, "ebpfEnergy.windowS") == 60
        driver.find_element("id", "pause").click()
        held = page(driver, "ebpfEnergy.drawnSeq")
        newest = lambda: page(driver, "ebpfEnergy.frames[ebpfEnergy.frames.length - 1].seq")
        wait_for("two frames while paused", lambda: newest() >= held + 2)
        assert page(driver, "ebpfEnergy.drawnSeq") == held and page(driver, "ebpfEnergy.status") == "live"
        assert driver.find_element("id", "status").text == "paused"
        driver.find_element("id", "pause").click()
        wait_for("the chart to catch up", lambda: page(driver, "ebpfEnergy.drawnSeq") >= held + 2)
        driver.find_element("css selector", "#window option[value='300']").click()
        wait_for("the burner's layer on the chart", lambda: page(driver, points) >= 3)
        driver.save_screenshot(str(SCREENSHOT))
        assert severe(driver) == []  # nothing wrong in the console so far
        # the server restarts on the same port: the page reconnects and follows the new run
        port = d.port
        assert d.stop() == -signal.SIGTERM
        wait_for("the page to notice", lambda: page(driver, "ebpfEnergy.status") == "reconnecting")
        # (now with a 16-entry task map: this machine runs more threads than that, so slices are lost)
        d = RunningDashboard("--interval", "1", "--top", "12", "-p", "10", "--max-tasks", "16",
                             listen=f"127.0.0.1:{port}")
        wait_for("the page on the new run", lambda: page(driver, "ebpfEnergy.run") not in (run1, None) and
                 page(driver, "ebpfEnergy.status") == "live" and page(driver, "ebpfEnergy.drawnSeq") >= 2)
        assert page(driver, "ebpfEnergy.restarts") == 1
        assert page(driver, "ebpfEnergy.frames[0].seq") == 2  # the old run's frames are gone (refresh 1 draws none)
        assert "meter" not in legend_names(driver)  # the new run has none
        # losses are shown once they are non-zero
        wait_for("the drops line", lambda: not page(driver, "document.getElementById('drops').hidden"))
        assert "scheduling slices" in driver.find_element("id", "drops").text
        # while the server was down the browser logged failed connections to /events, and nothing else
        for e in severe(driver):
            assert e["source"] == "network" and "/events" in e["message"], e
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        d.stop()
        sim.__exit__(None, None, None)
