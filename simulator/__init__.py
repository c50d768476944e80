"""A local, deterministic stand-in for Gamma, the Goldsky orderbook subgraph and Polygon JSON-RPC.

Entry points: `simulator.server.main` (CLI), `simulator.server.serve_in_thread` (tests, benchmarks).
"""
