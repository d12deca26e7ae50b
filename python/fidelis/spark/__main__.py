"""``python -m fidelis.spark``: the command line (:func:`fidelis.spark.main`)."""

import sys

from fidelis.spark import main

sys.exit(main())
