"""creps.train: the original training recipe."""
