"""``python -m larr`` is the ``larr`` command."""

from larr.cli import main

raise SystemExit(main())
