"""The chaos soak (`make chaos`, and a seeded CI-sized run in `make test`): many
rollouts, healthy and bad, under a seeded schedule of faults, with an independent
recorder checking the invariants over the whole history. See docs/reliability.md."""
