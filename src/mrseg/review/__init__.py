"""Review in the browser: a local web page over a segment output folder, a cohort or an annotation project.

:func:`~mrseg.review.server.serve` starts the server; :mod:`~mrseg.review.sources` reads the
folder's cases, :mod:`~mrseg.review.volumes` slices them for display and
:mod:`~mrseg.report.decisions` keeps what the reviewer decided in ``DIR/review.csv``.

Example:
    >>> from mrseg.review import ReviewSettings, serve  # doctest: +SKIP
    >>> serve("out/", ReviewSettings(port=8765), on_ready=print)  # doctest: +SKIP
"""

from mrseg.report.decisions import REVIEW_FILE, Decision, DecisionTable
from mrseg.review.server import ReviewApp, ReviewSettings, make_server, new_token, serve
from mrseg.review.sources import ReviewCase, open_source

__all__ = ["REVIEW_FILE", "Decision", "DecisionTable", "ReviewApp", "ReviewCase", "ReviewSettings", "make_server",
           "new_token", "open_source", "serve"]
