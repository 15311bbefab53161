"""The services layer: the orchestration the CLI commands, the demo and the benchmarks share.

Plain typed functions over streams, models, ingest, storage, crew and
dashboards: run a simulated fleet, train and publish a model, start the
worker as a child process, build an uplink processor, run the downlink
service. The CLI package (``citywatch``) parses options and prints; it is the
only layer above this one.
"""
