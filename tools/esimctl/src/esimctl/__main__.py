"""`python -m esimctl`, the same as the `esimctl` command."""

from esimctl.cli import main

main()
