"""pytest plugin: energy budgets per test, and joules per test at the end.

    @pytest.mark.energy_budget(joules=5)
    def test_import_is_cheap(): ...

    pytest --energy-report

Registered through the ``pytest11`` entry point, so it loads in every pytest
run of an environment with ebpf-energy installed: it does nothing (and
imports nothing heavy) unless a test carries the marker or the report was
asked for. Only the test's call phase is measured (not its fixtures' setup
and teardown). Without the privilege for eBPF (root, or CAP_BPF and
CAP_PERFMON) budgets are still checked, on the CPU time the kernel's rusage
gives for the test process and its reaped children, priced by the same
model; the terminal summary says so.
"""

import math

import pytest

_STATE_KEY = "_ebpf_energy_state"


class _State:
    def __init__(self, report: bool):
        self.report = report
        self.results = []  # (nodeid, Result)
        self.notes = []
        self.sampler = None
        self.model = None
        self.meter = None
        from ebpf_energy.privilege import can_bpf

        self.can_measure = can_bpf()


def pytest_addoption(parser):
    group = parser.getgroup("ebpf-energy")
    group.addoption("--energy-report", action="store_true", default=False,
                    help="ebpf-energy: print the joules each test spent (needs root for eBPF).")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "energy_budget(joules): fail the test when it (and its child processes) spend more joules")
    setattr(config, _STATE_KEY, _State(config.getoption("--energy-report", default=False)))


def _note(state, text):
    """Said in the terminal summary: a line written during a test is swallowed by output capture."""
    if text not in state.notes:
        state.notes.append(text)


def _budget(marker):
    """The marker's joules, or a usage error naming what is wrong with it."""
    if marker.args and "joules" in marker.kwargs:
        raise pytest.UsageError("energy_budget: give the joules once (energy_budget(5) or energy_budget(joules=5))")
    if not marker.args and "joules" not in marker.kwargs:
        raise pytest.UsageError("energy_budget needs the joules: @pytest.mark.energy_budget(joules=5)")
    value = marker.kwargs.get("joules", marker.args[0] if marker.args else None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise pytest.UsageError(f"energy_budget(joules={value!r}): the budget must be a positive, finite number "
                                "of joules")
    return float(value)


def pytest_collection_modifyitems(session, config, items):
    """A bad marker is a usage error at collection, before any test runs."""
    for item in items:
        marker = item.get_closest_marker("energy_budget")
        if marker is not None:
            try:
                _budget(marker)
            except pytest.UsageError as e:
                raise pytest.UsageError(f"{item.nodeid}: {e}") from None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    state = getattr(item.config, _STATE_KEY, None)
    marker = item.get_closest_marker("energy_budget")
    if state is None or (marker is None and not state.report):
        yield
        return
    from ebpf_energy.measurement import Measurement

    if state.model is None:
        from ebpf_energy.model.select import choose_model

        state.model, state.meter = choose_model(warn=lambda msg: None)
    if not state.can_measure:
        _note(state, "no eBPF here (needs root, or CAP_BPF and CAP_PERFMON): energy budgets were checked on the "
                     "rusage CPU time of each test's process and its reaped children, priced by the model")
    if state.can_measure and state.sampler is None:
        from ebpf_energy.monitor import EbpfSampler
        from ebpf_energy.topology import sampler_kwargs

        try:  # one load for the whole session, not one per test (~80 ms each)
            sampler = EbpfSampler(**sampler_kwargs(getattr(state.model, "topology", None)))
            sampler.start()
            state.sampler = sampler
        except Exception as e:  # noqa: BLE001 - measuring must never break the tests
            state.can_measure = False
            _note(state, f"cannot load the eBPF monitor ({e}): budgets were checked on rusage CPU time")
    m = Measurement(model=state.model, meter=state.meter, use_ebpf=state.can_measure, sampler=state.sampler)
    try:
        m.__enter__()
    except Exception as e:  # measuring must never break the test itself
        _note(state, f"cannot measure energy ({e}); those tests ran unmeasured")
        yield
        return
    outcome = yield
    m.__exit__(None, None, None)
    state.results.append((item.nodeid, m.result))
    if marker is None or outcome.excinfo is not None:
        return
    budget = _budget(marker)
    if m.joules > budget:
        procs = f"{m.processes} process(es)" if m.processes is not None else "rusage, no eBPF"
        msg = (f"energy budget exceeded: {m.joules:.3f} J > {budget:g} J "
               f"({m.cpu_seconds:.3f} s CPU, {procs}; model {m.result.model.get('name')})")
        exc = pytest.fail.Exception(msg, pytrace=False)
        if hasattr(outcome, "force_exception"):
            outcome.force_exception(exc)
        else:  # pragma: no cover - pluggy < 1.1
            outcome._excinfo = (type(exc), exc, None)


def pytest_unconfigure(config):
    state = getattr(config, _STATE_KEY, None)
    if state is not None:
        if state.sampler is not None:
            state.sampler.stop()
            state.sampler = None
        if state.meter is not None:
            state.meter.close()
            state.meter = None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = getattr(config, _STATE_KEY, None)
    if state is None:
        return
    tr = terminalreporter
    for note in state.notes:
        tr.write_line(f"ebpf-energy: {note}", yellow=True)
    if not state.report:
        return
    tr.section("ebpf-energy: joules per test (call phase)")
    if not state.results:
        tr.write_line("no test was measured")
        return
    model = state.results[0][1].model
    from ebpf_energy.report import model_sentence

    for nodeid, r in sorted(state.results, key=lambda t: -t[1].energy_j):
        # rusage cannot count processes: "-", not a 0 that reads as "nothing ran"
        procs = "-" if r.processes is None else str(r.processes)
        tr.write_line(f"{r.energy_j:10.3f} J {r.cpu_ns / 1e9:8.3f} s CPU {procs:>5} proc  {nodeid}")
    total = sum(r.energy_j for _, r in state.results)
    tr.write_line(f"{total:10.3f} J in all; model: {model_sentence(model)}")
