"""`python -m nurture` is the `nurture` command."""

from .cli import main

main()
