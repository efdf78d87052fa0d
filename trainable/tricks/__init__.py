"""Training tricks: one small module each, off at 0/None, each citing its paper."""
