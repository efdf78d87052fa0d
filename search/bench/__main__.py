"""``python -m search.bench``: the benchmark figures (make bench)."""

import sys

from search.bench import main

sys.exit(main())
