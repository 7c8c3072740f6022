"""`python -m spacesecrets` is the `spacesecrets` command."""

from spacesecrets.cli import main

main()
