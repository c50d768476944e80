"""Today's rarer Gamma market shapes, seen in real captured replies (docs/upstream-gamma.md), given to a share of
the listed markets so every sync meets them.

One shape per market at most, each present at least once when the world has enough markets:
- `no_volume`: no `volume`, `liquidity`, `volumeNum`, `liquidityNum` keys at all (a closed market's real reply);
- `no_neg_risk`, `no_start_date`: the key is absent (2020 markets);
- `amm`: a legacy AMM market, the only kind that still carries `marketMakerAddress` (a mixed-case FPMM address);
- `scalar`: a Long/Short scalar market (`marketType: "scalar"`, `lowerBound`, `upperBound`);
- `long_prices`: outcome prices with 34 significant digits;
- `short_fraction`: times with 3, 4 or 5 digits of fractions of a second;
- `position_ids_text` (V2 markets only): `positionIds` as a JSON-encoded string instead of a native array.
Draws come from their own random stream, so with `gamma_shape_share = 0` the world is the one of before.
"""

from __future__ import annotations

import random

from simulator.catalogue import LISTED, Catalogue

V1_SHAPES = ("no_volume", "no_neg_risk", "no_start_date", "amm", "scalar", "long_prices", "short_fraction")
V2_SHAPES = ("position_ids_text",)
SCALAR_OUTCOMES = ("Long", "Short")


def apply_gamma_shapes(catalogue: Catalogue, seed: int, share: float) -> None:
    """Give a `share` of the listed markets one shape each (scalar ones become Long/Short markets)."""
    if share <= 0:
        return
    rng = random.Random(f"gamma-shapes:{seed}")
    listed = [m for m in catalogue.markets if m.listing == LISTED]
    for shapes, version in ((V1_SHAPES, False), (V2_SHAPES, True)):
        eligible = [m for m in listed if (m.version == "v2") == version]
        chosen = [m for m in eligible if rng.random() < share]
        if len(chosen) < len(shapes):
            chosen = rng.sample(eligible, min(len(shapes), len(eligible)))
        for i, market in enumerate(chosen):
            market.gamma_shape = shapes[i % len(shapes)]
            if market.gamma_shape == "scalar":
                market.outcomes = SCALAR_OUTCOMES
