"""Data formats: files in, tensors out. Nothing here knows about models or training."""
