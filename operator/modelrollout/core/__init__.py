"""The decision core: pure functions of spec, status, observations and the clock.

Nothing here imports kopf, kubernetes or a Prometheus client (a unit test checks),
so every decision can be tested without a cluster and replayed after a crash.
"""
