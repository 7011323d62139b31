import sys

from music.report.cli import main

sys.exit(main())
