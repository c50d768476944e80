// The dashboard page: polls /api/status and /api/history every 5 s and updates the page in place.
// Every value from the server is set with textContent (never innerHTML): market text is untrusted.
"use strict";

const REFRESH_MS = 5000;
const COLORS = ["#1565c0", "#2e7d32", "#c77700", "#6a1b9a", "#00838f", "#b42318", "#5d4037", "#546e7a"];
const charts = {};

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function cell(value, className) {
  if (value instanceof Node) {
    const td = el("td", null, className);
    td.appendChild(value);
    return td;
  }
  return el("td", value === null || value === undefined ? "–" : value, className);
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(Array.isArray(c) ? cell(c[0], c[1]) : cell(c));
  return tr;
}

function fillTable(id, rows) {
  document.querySelector(`#${id} tbody`).replaceChildren(...rows);
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 90) return `${value.toFixed(1)} s`;
  if (value < 5400) return `${(value / 60).toFixed(1)} min`;
  if (value < 172800) return `${(value / 3600).toFixed(1)} h`;
  return `${(value / 86400).toFixed(1)} d`;
}

function when(unix) {
  return unix ? new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
}

function count(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
}

function pairs(object, digits) {
  const names = Object.keys(object || {}).sort();
  return names.map((name) => `${name} ${digits === undefined ? count(object[name]) : object[name].toFixed(digits)}`).join(", ");
}

function renderBanner(status) {
  const problems = [];
  if (!status.redis.ok) problems.push(`Redis is down (${status.redis.error})`);
  if (!status.clickhouse.ok) {
    const shown = status.clickhouse.stale ? `; showing numbers from ${when(status.clickhouse.checked_at)}` : "";
    problems.push(`ClickHouse is down (${status.clickhouse.error})${shown}`);
  }
  const banner = document.getElementById("banner");
  banner.textContent = problems.join(" · ");
  banner.hidden = problems.length === 0;
}

function renderRedisServer(redis) {
  const line = document.getElementById("redis-server");
  const warning = redis.durability_warning ? ` (${redis.durability_warning})` : "";
  line.textContent = redis.ok ? `${redis.server} · durability: ${redis.durability}${warning}` : "";
  line.className = redis.durability_warning ? "stale" : "muted";
}

function renderServices(services) {
  fillTable("services", services.map((s) => {
    const badge = el("span", s.state, `state state-${s.state}`);
    const error = s.last_error ? `${s.last_error} (${when(s.last_error_at)})` : "";
    return row([s.name, badge, seconds(s.heartbeat_age_s), when(s.started_at), pairs(s.rates, 1),
      pairs(s.counters), [error, "error"]]);
  }));
}

// An entry is a page of 1..N items; a stream that `stream:items` does not count (appended before pages) shows n/a.
function itemsAdded(stream) {
  if (stream.items_added === null || stream.items_added === undefined) return ["n/a", "num muted"];
  return [count(stream.items_added), "num"];
}

function renderStreams(streams) {
  const rows = [];
  for (const stream of streams) {
    const groups = stream.groups.length ? stream.groups : [null];
    groups.forEach((group, index) => {
      const first = index === 0;
      const head = [first ? stream.name : "", first ? [count(stream.length), "num"] : "",
        first ? [count(stream.entries_added), "num"] : "", first ? itemsAdded(stream) : ""];
      if (!group) { rows.push(row([...head, "–", "", "", ""])); return; }
      if (!group.exists) { rows.push(row([...head, group.name, ["not created yet", "muted"], "", ""])); return; }
      const consumers = group.consumers.map((c) => `${c.name} (${c.pending} pending, idle ${seconds(c.idle_s)})`);
      rows.push(row([...head, group.name, [count(group.lag), "num"], [count(group.pending), "num"],
        consumers.join("; ") || "none"]));
    });
  }
  fillTable("streams", rows);
}

function behindSource(c) {
  if (c.behind_s !== null) return seconds(c.behind_s);
  if (c.behind_blocks === null) return "–";
  const lag = c.finality_lag_blocks !== null ? ` (finality lag ${count(c.finality_lag_blocks)} blocks)` : "";
  return `${count(c.behind_blocks)} blocks behind the safe head${lag}`;
}

function renderCursors(cursors) {
  fillTable("cursors", cursors.map((c) => row([c.key, c.value, seconds(c.age_s), behindSource(c)])));
}

function renderClickHouse(status) {
  const ch = status.clickhouse;
  const cls = ch.ok ? undefined : "stale";
  fillTable("tables", ch.tables.map((t) => row([t.name, [count(t.rows), cls ? "num stale" : "num"]])));
  document.getElementById("newest-trade").textContent = ch.newest_trade_at ? `${when(ch.newest_trade_at)} (${seconds(status.generated_at - ch.newest_trade_at)} ago)` : "–";
  const u = status.unresolved;
  const modules = Object.entries(u.by_module).map(([name, n]) => `${name.replaceAll("_", " ")} ${count(n)}`).join(", ");
  document.getElementById("unresolved").textContent =
    `${count(u.trades_without_market)} trades without a market in ClickHouse${modules ? ` (${modules})` : ""} · ${count(u.lookups_pending)} tokens being looked up · ${count(u.emitted_without_market)} emitted without a market by the processor${u.excluded_by_versions ? ` · ${count(u.excluded_by_versions)} written at once without a market: their market's version is left out by GAMMA_VERSIONS` : ""}`;
  fillTable("trades", ch.latest_trades.map((t) => row([
    when(t.timestamp), t.question || (t.market_id ? `market ${t.market_id}` : "unknown market"), t.outcome, t.side,
    [t.price.toFixed(4), "num"], [Number(t.usd_amount).toFixed(2), "num"],
  ])));
}

function renderDlq(dlq) {
  document.getElementById("dlq-length").textContent = count(dlq.length);
  fillTable("dlq", dlq.latest.map((d) => row([when(d.time), d.stream, d.group || "(ingester)", d.deliveries, [d.error, "error"]])));
}

function chartOptions(title, names, width) {
  return {
    title, width, height: 240,
    scales: { x: { time: true } },
    series: [{}, ...names.map((name, i) => ({ label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))],
    axes: [{ values: (u, splits) => splits.map((v) => new Date(v * 1000).toISOString().slice(11, 19)) }, { size: 60 }],
  };
}

function renderChart(id, title, t, seriesByName) {
  const names = Object.keys(seriesByName).sort();
  const data = [t, ...names.map((name) => seriesByName[name])];
  const container = document.getElementById(id);
  const key = names.join("|");
  const existing = charts[id];
  if (existing && existing.key === key) {
    existing.plot.setData(data);
    return;
  }
  if (existing) existing.plot.destroy();
  const width = Math.max(300, container.clientWidth || 600);
  charts[id] = { key, plot: new uPlot(chartOptions(title, names, width), data, container) };
}

function render(status, history) {
  renderBanner(status);
  renderRedisServer(status.redis);
  renderServices(status.services);
  renderStreams(status.streams);
  renderCursors(status.cursors);
  renderClickHouse(status);
  renderDlq(status.dlq);
  renderChart("chart-throughput", "per second", history.t, history.throughput);
  renderChart("chart-backlog", "entries", history.t, history.backlog);
  document.getElementById("updated").textContent = `updated ${when(status.generated_at)}`;
  document.body.dataset.generatedAt = String(status.generated_at);
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  try {
    const [status, history] = await Promise.all([getJSON("/api/status"), getJSON("/api/history")]);
    render(status, history);
  } catch (error) {
    const banner = document.getElementById("banner");
    banner.textContent = `The dashboard did not answer: ${error.message}`;
    banner.hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
