"""`python -m codemill.cli` (as torchrun runs it): the `codemill` command."""

from codemill.cli import main

raise SystemExit(main())
