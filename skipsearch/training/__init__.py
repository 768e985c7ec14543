"""Scripts that regenerate the shipped weights (not imported by skipsearch itself)."""
