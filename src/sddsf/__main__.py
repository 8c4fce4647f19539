"""``python -m sddsf`` runs the command line."""

from sddsf.cli import main

main()
