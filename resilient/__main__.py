"""`python -m resilient` runs the command-line tool."""

from resilient.cli import main

raise SystemExit(main())
