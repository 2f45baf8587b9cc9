"""`python -m glmrun` is the `glmrun` command."""

from glmrun.cli.main import main

main()
