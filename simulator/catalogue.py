"""The seeded catalogue of events, markets, tags and series (the Gamma side of the world).

Pure generation from a seed; rendering to Gamma JSON lives in `gamma_render.py`. Ids grow with creation:
listed events first, then the late ones (listed `late_listing_delay_s` after start), then the unlisted
ones (their tokens trade on chain, Gamma never shows them). Protocol V2 versions, position ids and the Combo
positions (appended last, listing COMBO: no event, never on Gamma) are added by `protocol_v2.py`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

LISTED, LATE, UNLISTED, COMBO = "listed", "late", "unlisted", "combo"
FIRST_MARKET_ID = 512_000
FIRST_EVENT_ID = 31_000
CATALOGUE_START_S = 1_735_689_600  # 2025-01-01T00:00:00Z: markets are created from here on

TAGS = (
    ("2", "Politics", "politics"),
    ("21", "Crypto", "crypto"),
    ("1", "Sports", "sports"),
    ("101970", "World", "world"),
    ("100328", "Économie & Finance", "economy"),
    ("596", "Culture", "culture"),
    ("1401", "Tech <AI>", "tech"),
    ("235", "Bitcoin", "bitcoin"),
)
SERIES = (("3", "MLB", "mlb", "daily"), ("10345", "BTC Up or Down 15m", "btc-up-or-down-15m", "15m"))
SUBJECTS = (
    "Bitcoin",
    "Ethereum",
    'the "Fed"',
    "Zoë Kravitz",
    "São Paulo FC",
    "Nvidia & AMD",
    "Jürgen Klopp",
    "the S&P 500",
    "Москва",
    "東京 Tokyo",
    "Real Madrid",
    "O'Brien",
    "GPT-5 <beta>",
    "Dogecoin",
)
BINARY_TEMPLATES = (
    ("Will {s} close above ${n}k on {d}?", ("Yes", "No")),
    ("{s} Up or Down - {d}, 12:00PM-12:15PM ET", ("Up", "Down")),
    ('Will {s} win "{d}" & advance?', ("Yes", "No")),
    ("{s} vs. Mets: who wins on {d}?", ("Nationals", "Mets")),
    ("Will {s} be < {n} by {d}?", ("Yes", "No")),
)
NEG_RISK_TITLES = ('Who will win the {d} "{s}" election?', "Which company has the best AI model end of {d}?")
CANDIDATES = ("Alice Müller", 'Bob "The Builder"', "Chloé & Co", "Dmitri <D>", "Eve", "Fumiko 藤田", "Other")


@dataclass
class Market:
    index: int  # position in the catalogue (token index = 2 * index + outcome)
    id: str
    event_index: int
    question: str
    slug: str
    condition_id: str
    question_id: str
    outcomes: tuple[str, ...]
    token_ids: tuple[str, ...]  # CTF token ids (Gamma's clobTokenIds), index i <-> outcomes[i]; () for Combos
    tick: float
    neg_risk: bool
    listing: str
    created_s: float
    updated_s: float
    end_s: float
    closed: bool
    price: float  # outcome 0's price
    volume: float
    liquidity: float
    fee_bps: int
    group_item_title: str = ""
    neg_risk_market_id: str = ""
    version: str | None = "v1"  # Gamma's `version`: "v1", "v2", or None (the field is absent)
    position_ids: tuple[str, ...] = ()  # "v2": PositionManager position ids, index i <-> outcomes[i]
    shows_clob_token_ids: bool = True  # Gamma renders clobTokenIds (a V2 market may carry both id fields)
    gamma_shape: str = ""  # one of today's rarer Gamma shapes (`gamma_shapes.py`), "" for the common one

    @property
    def traded_ids(self) -> tuple[str, ...]:
        """The asset ids its fills carry: position ids for a V2 market (or Combo), CTF token ids otherwise."""
        return self.position_ids if self.version == "v2" else self.token_ids

    @property
    def listed_token_ids(self) -> tuple[str, ...]:
        """The ids Gamma shows in `clobTokenIds` (what the `clob_token_ids` filter matches)."""
        return self.token_ids if self.shows_clob_token_ids else ()


@dataclass
class Event:
    index: int
    id: str
    title: str
    slug: str
    description: str
    market_indexes: list[int]
    tag_indexes: list[int]
    series_index: int | None
    neg_risk: bool
    listing: str
    created_s: float
    updated_s: float
    end_s: float
    closed: bool
    neg_risk_market_id: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class Catalogue:
    events: list[Event]
    markets: list[Market]

    def token_count(self) -> int:
        return 2 * len(self.markets)

    def token_id(self, token_index: int) -> str:
        """The traded id of token index `2 * market index + outcome index`."""
        return self.markets[token_index // 2].traded_ids[token_index % 2]

    def event_market_count(self) -> int:
        """Markets that belong to events (everything but the Combo positions appended last)."""
        return sum(1 for m in self.markets if m.listing != COMBO)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "market"


def _hex32(rng: random.Random) -> str:
    return "0x" + rng.getrandbits(256).to_bytes(32, "big").hex()


def _token_id(rng: random.Random) -> str:
    while True:
        value = rng.getrandbits(256)
        if value >= 10**75:  # 76..78 decimal digits, like real CTF position ids
            return str(value)


def _date_text(rng: random.Random) -> str:
    return rng.choice(("January 5", "March 31", "June 10", "December 31", "8 août", "Q3 2026"))


def generate_catalogue(seed: int, listed: int, late: int, unlisted: int) -> Catalogue:
    """Events and markets: `listed` markets (some in neg-risk events), then `late` and `unlisted` binaries."""
    rng = random.Random(f"catalogue:{seed}")
    events: list[Event] = []
    markets: list[Market] = []
    created_s = float(CATALOGUE_START_S)
    plan: list[tuple[str, int]] = []
    remaining = listed
    while remaining > 0:
        size = rng.randint(3, 6) if rng.random() < 0.3 and remaining >= 3 else 1
        plan.append((LISTED, size))
        remaining -= size
    plan += [(LATE, 1)] * late + [(UNLISTED, 1)] * unlisted
    for listing, size in plan:
        created_s += rng.uniform(600, 36_000) + rng.random()
        event = _new_event(rng, len(events), listing, size, created_s)
        events.append(event)
        for item in range(size):
            market = _new_market(rng, len(markets), event, item, created_s + item * 0.5)
            markets.append(market)
            event.market_indexes.append(market.index)
    return Catalogue(events=events, markets=markets)


def _new_event(rng: random.Random, index: int, listing: str, size: int, created_s: float) -> Event:
    neg_risk = size > 1
    subject, when = rng.choice(SUBJECTS), _date_text(rng)
    title = rng.choice(NEG_RISK_TITLES).format(s=subject, d=when) if neg_risk else f"{subject}: {when}"
    closed = listing == LISTED and rng.random() < 0.25
    event_id = str(FIRST_EVENT_ID + index * 7 + rng.randint(0, 6))
    tags = sorted(rng.sample(range(len(TAGS)), rng.randint(1, 3)))
    return Event(
        index=index,
        id=event_id,
        title=title,
        slug=f"{slugify(title)}-{event_id}",
        description=f'Resolves "Yes" per the rules for {title} & official sources <see link>.',
        market_indexes=[],
        tag_indexes=tags,
        series_index=rng.randrange(len(SERIES)) if rng.random() < 0.3 else None,
        neg_risk=neg_risk,
        listing=listing,
        created_s=created_s,
        updated_s=created_s + rng.uniform(60, 3600),
        end_s=created_s + rng.uniform(86_400, 90 * 86_400),
        closed=closed,
        neg_risk_market_id=_hex32(rng) if neg_risk else "",
    )


def _new_market(rng: random.Random, index: int, event: Event, item: int, created_s: float) -> Market:
    subject, when = rng.choice(SUBJECTS), _date_text(rng)
    if event.neg_risk:
        group_item = CANDIDATES[item % len(CANDIDATES)]
        question, outcomes = f"Will {group_item} win? ({event.title})", ("Yes", "No")
    else:
        group_item = ""
        template, outcomes = rng.choice(BINARY_TEMPLATES)
        question = template.format(s=subject, d=when, n=rng.randint(10, 200))
    market_id = str(FIRST_MARKET_ID + index * 3 + rng.randint(0, 2))
    tick = 0.001 if rng.random() < 0.2 else 0.01
    price = round(rng.uniform(0.05, 0.95), 2)
    return Market(
        index=index,
        id=market_id,
        event_index=event.index,
        question=question,
        slug=f"{slugify(question)}-{market_id}",
        condition_id=_hex32(rng),
        question_id=_hex32(rng),
        outcomes=outcomes,
        token_ids=(_token_id(rng), _token_id(rng)),
        tick=tick,
        neg_risk=event.neg_risk,
        listing=event.listing,
        created_s=created_s,
        updated_s=event.updated_s,
        end_s=event.end_s,
        closed=event.closed,
        price=1.0 if event.closed else price,
        volume=round(rng.uniform(100, 2e6), 6),
        liquidity=round(rng.uniform(0, 50_000), 4),
        fee_bps=rng.choice((0, 0, 0, 100, 200)),
        group_item_title=group_item,
        neg_risk_market_id=event.neg_risk_market_id,
    )
