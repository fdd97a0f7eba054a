"""Reference backbone workload (later issues)."""
