"""`python -m pipeline` is the `taxifare` command."""

from pipeline.cli import main

raise SystemExit(main())
