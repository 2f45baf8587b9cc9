"""`python -m glmrun` is the `glmrun` command."""

from glmrun.cli import main

main()
