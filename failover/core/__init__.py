"""Pure failover decisions: no I/O, no threads, no clock reads; time is passed in."""
