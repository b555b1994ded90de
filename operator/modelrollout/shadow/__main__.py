"""`python -m modelrollout.shadow`, the same as `modelrollout-shadow`."""

from modelrollout.shadow.main import main

main()
