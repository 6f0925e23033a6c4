"""`python -m slimnets ...` runs the command line."""
import sys

from slimnets.cli import main

sys.exit(main())
