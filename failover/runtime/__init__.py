"""Runtime loops: site agent, controller, wiring (later issues)."""
