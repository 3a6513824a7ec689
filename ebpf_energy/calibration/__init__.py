"""Calibration: drive the CPUs through load levels, read a meter, and fit
``power = idle_watts + watts_per_cpu_second x busy CPUs``.

``workload`` spins the load, :mod:`ebpf_energy.cpustat` reads CPU busy time, ``fit`` does the
least squares with confidence intervals, ``runner`` samples the levels, and
``profile`` stores the result where the monitor finds it.
"""
