"""Data formats: files in, tensors out. Nothing here knows about models or training."""

GENERATED = "generated"  # the --data value of every task's built-in generated data set
