import sys

from polyformer.cli import main

sys.exit(main())
