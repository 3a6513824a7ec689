"""pytest plugin: energy budgets per test, and joules per test at the end.

    @pytest.mark.energy_budget(joules=5)
    def test_import_is_cheap(): ...

    pytest --energy-report

Registered through the ``pytest11`` entry point, so it loads in every pytest
run of an environment with ebpf-energy installed: it does nothing (and
imports nothing heavy) unless a test carries the marker or the report was
asked for. Without root it says so once and runs the tests unmeasured.
"""

import os

import pytest

_STATE_KEY = "_ebpf_energy_state"


class _State:
    def __init__(self, report: bool):
        self.report = report
        self.results = []  # (nodeid, Result)
        self.warned = False
        self.model = None
        self.meter = None
        self.can_measure = os.geteuid() == 0


def pytest_addoption(parser):
    group = parser.getgroup("ebpf-energy")
    group.addoption("--energy-report", action="store_true", default=False,
                    help="ebpf-energy: print the joules each test spent (needs root for eBPF).")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "energy_budget(joules): fail the test when it (and its child processes) spend more joules")
    setattr(config, _STATE_KEY, _State(config.getoption("--energy-report", default=False)))


def _warn_once(state, config, text):
    if state.warned:
        return
    state.warned = True
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"ebpf-energy: {text}", yellow=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    state = getattr(item.config, _STATE_KEY, None)
    marker = item.get_closest_marker("energy_budget")
    if state is None or (marker is None and not state.report):
        yield
        return
    if not state.can_measure:
        _warn_once(state, item.config, "not root: tests run without energy measurement "
                                       "(energy budgets are not checked)")
        yield
        return
    from ebpf_energy.measurement import Measurement

    if state.model is None:
        from ebpf_energy.model.select import choose_model

        state.model, state.meter = choose_model(warn=lambda msg: None)
    m = Measurement(model=state.model, meter=state.meter)
    try:
        m.__enter__()
    except Exception as e:  # measuring must never break the test itself
        _warn_once(state, item.config, f"cannot measure energy ({e}); tests run unmeasured")
        yield
        return
    outcome = yield
    m.__exit__(None, None, None)
    state.results.append((item.nodeid, m.result))
    if marker is None or outcome.excinfo is not None:
        return
    budget = marker.kwargs.get("joules", marker.args[0] if marker.args else None)
    if budget is None:
        return
    if m.joules > budget:
        msg = (f"energy budget exceeded: {m.joules:.3f} J > {budget:g} J "
               f"({m.cpu_seconds:.3f} s CPU, {m.processes} process(es); model {m.result.model.get('name')})")
        exc = pytest.fail.Exception(msg, pytrace=False)
        if hasattr(outcome, "force_exception"):
            outcome.force_exception(exc)
        else:  # pragma: no cover - pluggy < 1.1
            outcome._excinfo = (type(exc), exc, None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = getattr(config, _STATE_KEY, None)
    if state is None or not state.report:
        return
    tr = terminalreporter
    tr.section("ebpf-energy: joules per test")
    if not state.results:
        tr.write_line("no test was measured" + ("" if state.can_measure else " (not root)"))
        return
    model = state.results[0][1].model
    from ebpf_energy.report import model_sentence

    for nodeid, r in sorted(state.results, key=lambda t: -t[1].energy_j):
        tr.write_line(f"{r.energy_j:10.3f} J {r.cpu_ns / 1e9:8.3f} s CPU {r.processes or 0:5d} proc  {nodeid}")
    total = sum(r.energy_j for _, r in state.results)
    tr.write_line(f"{total:10.3f} J in all; model: {model_sentence(model)}")
