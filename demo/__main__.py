"""`python -m modelyard.demo --out FOLDER` (`make run`)."""

import sys

from modelyard.demo.run import main

sys.exit(main())
