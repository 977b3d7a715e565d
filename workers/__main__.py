"""`python -m workers [--beat]`: a job worker (what `upload-portal worker` runs)."""
import sys

from workers.worker import main

main("--beat" in sys.argv[1:])
