"""`make showcase`: what a new user sees, made from a fixed world (docs/img/dashboard.png, docs/queries.md).

    python -m pipeline.harness.showcase [--out-dir docs]

Runs the demo's fleet (pipeline/harness/fleet.py: the simulator, Redis, the embedded ClickHouse, the six services
and the dashboard, each its own process, on free ports, in a temp folder) over a history-only world: seed 1,
5,000 fills, 60 markets, no live fills. Once every fill is a row of `trades`, it
- screenshots the dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) into
  `<out-dir>/img/dashboard.png`;
- runs the three queries a user runs first and writes them with their output to `<out-dir>/queries.md`.
The world is fixed, so the queries' output changes only when the pipeline's results do; the screenshot also shows
ages and uptimes, which differ from run to run. Fills of markets Gamma never lists wait UNKNOWN_MARKET_WAIT_S
for their market (300 s in production): 20 s here, beyond the late markets' listing 5 s after the start.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import async_playwright

from pipeline.harness.fleet import Fleet, wait_converged
from pipeline.harness.fleet_live import PRODUCT_DEFAULTS

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
WORLD = ["--history-fills", "5000", "--markets", "60", "--seed", "1", "--rate", "0", "--finalized-lag-blocks", "2"]
CONVERGE_S = 300.0


@dataclass(frozen=True)
class Query:
    title: str
    why: str
    sql: str


QUERIES = (
    Query(
        "Taker-side volume per market and hour",
        "Each match is one taker fill and one or more maker fills: `is_taker_side = 1` counts every match once. "
        "On a live pipeline write `now() - INTERVAL 1 DAY`; the fixed world ends in April 2026, so this one counts "
        "back from its newest trade (the four biggest markets of each hour). The view `market_volume_hourly` "
        "holds the same sums for every hour.",
        """WITH (SELECT max(timestamp) FROM polymarket.trades) AS newest
SELECT
    toStartOfHour(t.timestamp) AS hour,
    t.market_id,
    any(m.question)            AS question,
    round(sum(t.usd_amount), 2) AS volume_usd,
    count()                    AS matches
FROM polymarket.trades AS t
LEFT JOIN polymarket.markets AS m ON m.id = t.market_id
WHERE t.is_taker_side = 1 AND t.market_id != '' AND t.timestamp >= newest - INTERVAL 1 DAY
GROUP BY hour, t.market_id
ORDER BY hour DESC, volume_usd DESC
LIMIT 4 BY hour""",
    ),
    Query(
        "OHLCV candles for a token",
        "Five-minute candles of the token with the most matches, from the parameterized view `token_candles` "
        "(any bucket: `bucket_s`). Open and close are the first and last price in chain order (timestamp, block, "
        "log index), not in arrival order; volumes are exact decimals; taker-side fills only, one per match.",
        """WITH (
    SELECT token_id FROM polymarket.trades WHERE is_taker_side = 1
    GROUP BY token_id ORDER BY count() DESC, token_id LIMIT 1
) AS token
SELECT bucket, open, high, low, close, volume_usd, volume_tokens, matches
FROM polymarket.token_candles(bucket_s = 300)
WHERE token_id = token
ORDER BY bucket""",
    ),
    Query(
        "The newest trades with their market's question",
        "`trades` is ordered by (token_id, timestamp, id) for per-token reads: bounding the time (here the last "
        "hour before the newest trade) keeps this a read of the newest partition, not of the whole table. A "
        "fill whose market is still unknown has `market_id = ''` and no question.",
        """WITH (SELECT max(timestamp) FROM polymarket.trades) AS newest
SELECT
    t.timestamp,
    m.question,
    t.outcome,
    t.taker_direction  AS taker,
    round(t.price, 3)  AS price,
    t.usd_amount
FROM polymarket.trades AS t
LEFT JOIN polymarket.markets AS m ON m.id = t.market_id
WHERE t.is_taker_side = 1 AND t.timestamp >= newest - INTERVAL 1 HOUR
ORDER BY t.timestamp DESC, t.id
LIMIT 10""",
    ),
)


def queries_page(outputs: list[str]) -> str:
    lines = [
        "# First queries",
        "",
        "Three queries to run first, each with its output on the fixed world of `make showcase` (the simulator's "
        "seed 1: 5,000 history fills over 60 markets, history only; pipeline/harness/showcase.py). Run them with "
        "`clickhouse client`, `curl` against the HTTP port (`curl 'http://127.0.0.1:8123/' --data-binary @q.sql`), "
        "or any ClickHouse client; the tables and views are described in docs/CONTRACT.md §4.",
        "",
    ]
    for number, (query, output) in enumerate(zip(QUERIES, outputs, strict=True), 1):
        lines += [f"## {number}. {query.title}", "", query.why, "", "```sql", query.sql, "```", "", output.strip(), ""]
    return "\n".join(lines)


async def screenshot(url: str, path: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(url)
            # two refreshes: the second one has ClickHouse's counts and the charts' first points
            await page.wait_for_function("() => Number(document.body.dataset.refreshes) >= 2", timeout=30_000)
            await page.screenshot(path=str(path), full_page=True)
        finally:
            await browser.close()


def run(out_dir: Path, workdir: Path, log=print) -> None:
    env = {"UNKNOWN_MARKET_WAIT_S": "20", "DASHBOARD_SAMPLE_INTERVAL_S": "1", "DASHBOARD_CLICKHOUSE_REFRESH_S": "1"}
    with Fleet(workdir, simulator_args=WORLD, service_env=env, service_defaults=PRODUCT_DEFAULTS,
               dashboard=True) as fleet:  # fmt: skip
        fleet.start_servers()
        expected = int(fleet.sim("GET", "/_sim/truth", params={"fills": 0})["count"])
        log(f"showcase: {expected:,} history fills; waiting until every one is a trade")
        fleet.start_services()
        waited = wait_converged(fleet, expected, CONVERGE_S)
        log(f"  converged in {waited:.0f} s; screenshot and queries")
        time.sleep(3)  # the dashboard's next samples see the drained streams
        (out_dir / "img").mkdir(parents=True, exist_ok=True)
        asyncio.run(screenshot(f"http://127.0.0.1:{fleet.dashboard_port}/", out_dir / "img" / "dashboard.png"))
        outputs = [fleet.ch(f"{query.sql}\nFORMAT Markdown") for query in QUERIES]
    (out_dir / "queries.md").write_text(queries_page(outputs))
    log(f"written: {out_dir / 'img' / 'dashboard.png'}, {out_dir / 'queries.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.harness.showcase", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "docs"), help="where img/dashboard.png and queries.md go")
    args = parser.parse_args(argv)
    if shutil.which(CHROMIUM) is None:
        print(f"showcase: {CHROMIUM} not found: install Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-showcase-"))
    try:
        run(Path(args.out_dir), workdir)
    except (TimeoutError, RuntimeError) as exc:
        print(f"showcase: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
