"""`make doctor`: python -m pipelines.doctor."""
import sys

from pipelines.doctor import main

sys.exit(main())
