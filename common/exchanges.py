"""Polymarket's exchange contracts on Polygon (reference §6), lowercase.

A fill whose `taker` is one of these is the taker order's own row of a match: summing volume over those rows
only counts every match once (`trades.is_taker_side`).
"""

CTF_EXCHANGE_V1 = "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e"
NEG_RISK_CTF_EXCHANGE_V1 = "0xc5d563a36ae78145c45a50134d48a1215220f80a"
CTF_EXCHANGE_V2 = "0xe111180000d2663c0091e4f400237545b87b996b"
NEG_RISK_CTF_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310f59"

V1_EXCHANGES = (CTF_EXCHANGE_V1, NEG_RISK_CTF_EXCHANGE_V1)
V2_EXCHANGES = (CTF_EXCHANGE_V2, NEG_RISK_CTF_EXCHANGE_V2)
ALL_EXCHANGES = frozenset(V1_EXCHANGES + V2_EXCHANGES)

# First block of the v2 exchanges (2026-04-28); the Goldsky subgraph has no fills after it.
V2_GENESIS_BLOCK = 84_902_353
