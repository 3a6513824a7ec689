"""The largest values a command-line number may take, without click.

:mod:`_numbers` builds click's checked types on them; ``load``'s start-up
parser (:mod:`load_options`), which runs without click, checks with them too.
"""

YEAR_S = 365 * 86400.0  # the longest run or refresh interval anyone means
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's upper bound on pid_max (64-bit)
MAX_WATTS_PER_CPU = 10_000.0
MAX_JOULES = 1e15
MAX_CARBON_G_PER_KWH = 10_000.0  # the dirtiest grids are ~1,000
MAX_COUNT = 1_000_000
