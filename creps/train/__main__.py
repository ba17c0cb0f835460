"""`python -m creps.train` (what torchrun runs): the creps-train command."""

from creps.train.cli import main

main()
