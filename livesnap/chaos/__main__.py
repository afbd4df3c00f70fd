import sys

from livesnap.chaos import main

sys.exit(main())
