"""``python -m mrseg`` runs the command-line interface."""

from mrseg.cli import main

raise SystemExit(main())
