"""``python -m search.report SPACE``: the report of a space's latest search (make report)."""

import sys

from search.report.command import main

sys.exit(main())
