"""``cortexlink bench faults``: a standing fault campaign.

Every case breaks one thing a careless or hostile user, a failing disk or a dying process would
break — a damaged recording, a killed redis-server, a hostile request, a full disk — and reports
``{case, survived, data_lost, cursor_halted_within_bins, exit_code, message_ok}``. Cases live by
area in :mod:`~cortexlink.bench.faults.storage`, :mod:`~cortexlink.bench.faults.runtime_cases`
and :mod:`~cortexlink.bench.faults.inputs`, registered with
:func:`~cortexlink.bench.faults.base.case`; :func:`~cortexlink.bench.faults.runner.run` runs each
in a child process of its own, bounded in time.
"""

from cortexlink.bench.faults.base import CASES, Case, Outcome, case
from cortexlink.bench.faults.runner import format_table, load_cases, run

__all__ = ["CASES", "Case", "Outcome", "case", "format_table", "load_cases", "run"]
