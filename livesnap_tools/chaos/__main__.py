import sys

from livesnap_tools.chaos import main

sys.exit(main())
