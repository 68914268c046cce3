"""``mrseg review DIR``: parse the options, start :mod:`mrseg.review`'s server, print its address."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import webbrowser
from typing import Any

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "review", help="review results in the browser: worst first, decisions by key",
        description=("Start a local web page over DIR (a mrseg segment output folder, a cohort folder or an "
                     "annotation project): the cases worst first, three planes with the label overlay, and "
                     "accept / flag / reject decisions kept in DIR/review.csv. Stop it with Ctrl+C."))
    p.add_argument("folder", metavar="DIR", help="output folder, cohort folder or annotation project")
    p.add_argument("--port", type=int, default=8765, metavar="P", help="port (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", metavar="HOST",
                   help="address to listen on (default 127.0.0.1, this machine only; any other address "
                        "requires the random access token printed with the address)")
    p.add_argument("--reviewer", default="", metavar="NAME", help="name recorded with each decision (default: "
                   "the login name)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")


def run(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.review import ReviewSettings, new_token, serve
    from mrseg.review.server import is_loopback

    token = None if is_loopback(args.host) else new_token()
    settings = ReviewSettings(host=args.host, port=args.port, reviewer=args.reviewer, token=token)

    def ready(url: str) -> Any:
        print(f"mrseg review: {url}", flush=True)
        if token:
            print("  reachable from other machines: share the address (with its token) only with reviewers",
                  flush=True)
        print("  Ctrl+C stops the server; decisions are saved as they are made", flush=True)
        if args.open:
            webbrowser.open(url)

    # Started in the background by a non-interactive shell (`mrseg review DIR &` in a script), the
    # process inherits SIGINT ignored, and Python then leaves it so: Ctrl+C or kill -INT would not
    # stop the server. It is a foreground server that says Ctrl+C stops it, so it always does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        serve(args.folder, settings, on_ready=ready)
    except KeyboardInterrupt:
        print("mrseg review: stopped", file=sys.stderr)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    return 0
