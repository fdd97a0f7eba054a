"""The `bfm` command line."""
