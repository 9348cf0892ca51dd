"""``deployres tune``: the fastest engine and serving configuration on this machine that meets the accuracy and
serving budgets, searched, measured and recorded (:func:`tune`, :class:`TuneSettings`).

Rooms: :mod:`.settings` (what a search is told), :mod:`.space` (engine candidates and serving points),
:mod:`.judge` (budgets on intervals, the objective), :mod:`.measure` (one point served through the bundled
tritonserver, or in-process), :mod:`.state` (resume and engine reuse), :mod:`.search` (the search itself),
:mod:`.report` (``tune.json``/``.md``/``.html``).
"""

from deploy_res.tune.search import BudgetNotMet, TuneResult, tune
from deploy_res.tune.settings import TuneSettings

__all__ = ["BudgetNotMet", "TuneResult", "TuneSettings", "tune"]
