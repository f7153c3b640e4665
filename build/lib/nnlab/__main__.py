"""`python -m nnlab` (and `torchrun -m nnlab`) runs the command-line interface."""

from nnlab.cli import main

main()
