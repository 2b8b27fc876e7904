import sys

from pipelines.publish.publisher import main

sys.exit(main())
