import sys

from asr_kd.cli import main

sys.exit(main())
