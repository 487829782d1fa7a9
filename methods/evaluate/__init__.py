"""The held-out suite on the starting model: round 0 of every method, as a method of its own."""
