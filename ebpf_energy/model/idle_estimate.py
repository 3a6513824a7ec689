"""Idle power from the meter's own readings during a run, when no profile says it.

Without a calibration profile the RAPL split cannot tell idle power from
dynamic power, and charging an idle CPU-ns like a busy one gives processes
far too little (on a meter of 8 W idle + 12 W per CPU-second, 1.92 J where
4.87 J of dynamic energy was spent). But the run itself usually varies its
load: every ``period`` this samples the meter and the machine's busy CPU time
(``/proc/stat``, what calibration fits against) and fits
``watts = idle + k x busy CPUs`` over the run, as ``calibrate`` does. The fit
is used only when it is trustworthy (enough samples, load varying by at least
``min_spread`` CPUs, a positive slope); the intercept is then the idle power,
bounded by the lowest power seen. Otherwise the model keeps the plain
CPU-time-share rule, and the report says which rule it used.
"""

import threading
import time
from collections import deque
from typing import Callable, Optional

from ebpf_energy.cpustat import busy_seconds
from ebpf_energy.calibration.fit import FitError, linear_fit

PERIOD_S = 0.25
MIN_SAMPLES = 8
MIN_SPREAD_CPUS = 0.25
KEEP_SAMPLES = 2400  # the last 10 minutes at PERIOD_S: a fit stays cheap on long runs


class IdlePowerEstimator:
    """Samples (busy CPUs, package watts) in the background; :meth:`estimate` fits them."""

    def __init__(self, meter, busy: Callable[[], float] = busy_seconds, period: float = PERIOD_S,
                 min_samples: int = MIN_SAMPLES, min_spread: float = MIN_SPREAD_CPUS,
                 clock: Callable[[], int] = time.monotonic_ns):
        self.meter, self.busy, self.period, self.clock = meter, busy, period, clock
        self.min_samples, self.min_spread = min_samples, min_spread
        self.x = deque(maxlen=KEEP_SAMPLES)  # busy CPUs over each sample interval
        self.y = deque(maxlen=KEEP_SAMPLES)  # package watts over it
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._last = None

    def start(self) -> "IdlePowerEstimator":
        self._thread = threading.Thread(target=self._loop, name="ebpf-energy-idle-estimate", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _sample(self):
        r = self.meter.read()
        return self.clock(), self.busy(), r.joules.get("package", r.joules.get("psys"))

    def step(self) -> None:
        """Take one sample; from the second on, record the interval since the last.
        The background loop calls it every ``period``; a test calls it itself."""
        cur = self._sample()
        last, self._last = self._last, cur
        if last is None:
            return
        dt = (cur[0] - last[0]) / 1e9
        if dt > 0 and cur[2] is not None and last[2] is not None:
            with self._lock:
                self.x.append((cur[1] - last[1]) / dt)
                self.y.append((cur[2] - last[2]) / dt)

    def _loop(self):
        try:
            self.step()
            while not self._stop.wait(self.period):
                self.step()
        except Exception:  # noqa: BLE001 - a failing meter is the driver's to report; the estimate just stops
            return

    def estimate(self) -> Optional[dict]:
        """``{"idle_watts", "samples", "r2"}`` when the run's readings give a usable fit, else None."""
        with self._lock:
            x, y = list(self.x), list(self.y)
        if len(x) < self.min_samples or max(x) - min(x) < self.min_spread:
            return None
        try:
            fit = linear_fit(x, y)
        except FitError:
            return None
        if fit.slope <= 0:
            return None
        idle = min(max(fit.intercept, 0.0), min(y))
        return {"idle_watts": idle, "samples": fit.n, "r2": fit.r2}
