"""`python -m codemill`: the same command line as `codemill`."""

from codemill.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
