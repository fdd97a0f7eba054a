"""`python -m failover` runs the `bfm` command line."""

from failover.cli.main import main

if __name__ == "__main__":
    main()
