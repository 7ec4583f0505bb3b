// spend.js: spend per key, team, user or model over a day, week or month (from /spend/logs' hourly rows), and keys near or over budget.
import { call } from "../api.js";
import { h, clear, form, table, attempt, money } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";
const PERIODS = { day: { days: 1, hourly: true }, week: { days: 7 }, month: { days: 30 } };
const DIMENSIONS = { api_key: "key", team_id: "team", user: "user", model: "model" };
const NEAR = 0.8;	// a key at 80% of its budget is near it

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
function day(t) { return new Date(t).toISOString().slice(0, 10); }

export default {
  title: "Spend",
  async render(host, me) {
    const chartHost = h("div", { id: "spend-chart" }), budgetHost = h("div", { id: "budget-watch" });
    host.append(form("Spend view", [
      { name: "period", label: "Period", type: "select", value: "week", options: [["day", "last 24 hours"], ["week", "last 7 days"], ["month", "last 30 days"]] },
      { name: "by", label: "Spend per", type: "select", value: "api_key", options: Object.entries(DIMENSIONS) },
    ], "Show spend", (v) => draw(v.period, v.by)), chartHost, h("h3", {}, "Keys near or over budget"), budgetHost);
    const names = {};

    async function draw(period, by) {
      await budgets();
      const p = PERIODS[period];
      const now = Date.now();
      const hour = 3600e3, step = p.hourly ? hour : 24 * hour;
      const n = p.hourly ? 24 : p.days;
      const end = p.hourly ? Math.floor(now / hour) * hour : Date.parse(day(now) + "T00:00:00Z");
      const first = end - (n - 1) * step;
      const rows = await attempt(null, () => call("GET", "/spend/logs", { query: { start_date: day(first), end_date: day(now), summarize: false } }));
      if (!rows) return;
      const series = new Map(), totals = new Array(n).fill(0);
      for (const r of rows) {
        const t = Date.parse(r.startTime);
        const i = Math.floor((t - first) / step);
        if (i < 0 || i >= n) continue;
        const name = r[by] ?? "none";
        if (!series.has(name)) series.set(name, new Array(n).fill(0));
        series.get(name)[i] += r.spend;
        totals[i] += r.spend;
      }
      const ranked = [...series.entries()].sort((a, b) => sum(b[1]) - sum(a[1]));
      const shown = ranked.slice(0, 7);
      if (ranked.length > 7) shown.push(["others", ranked.slice(7).reduce((acc, [, v]) => acc.map((x, i) => x + v[i]), new Array(n).fill(0))]);
      const label = (name) => by === "api_key" ? (names[name] || name.slice(0, 10) + "\u2026") : by === "team_id" ? (names["t:" + name] || name) : name;
      clear(chartHost).append(chart(n, totals, shown, label, (i) => p.hourly ? new Date(first + i * step).toISOString().slice(11, 13) + "h" : day(first + i * step).slice(5)));
      chartHost.append(h("p", { id: "spend-total" }, "Total spend: " + money(sum(totals)) + " over " + rows.length + " hourly rows"),
        table("Spend per " + DIMENSIONS[by], [{ label: DIMENSIONS[by], value: ([name]) => label(name) },
          { label: "Spend", num: true, value: ([, v]) => money(sum(v)) }], ranked, "No spend in this period."));
    }

    function chart(n, totals, shown, label, tick) {
      const W = 900, H = 300, L = 60, B = 40, T = 10;
      const max = Math.max(...totals, 0.0001);
      const bw = (W - L - 10) / n;
      const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": "chart-title chart-desc" },
        s("title", { id: "chart-title" }, "Spend per period"),
        s("desc", { id: "chart-desc" }, shown.length ? "Stacked bars of spend: " + shown.map(([name, v]) => label(name) + " " + money(sum(v))).join(", ") : "No spend in this period."),
        s("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, class: "axis" }),
        s("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
        s("text", { x: 4, y: T + 10, class: "bar-label" }, money(Math.max(...totals, 0))),
        s("text", { x: 4, y: H - B, class: "bar-label" }, "$0"));
      for (let i = 0; i < n; i++) {
        let y = H - B;
        shown.forEach(([, v], c) => {
          const hgt = (v[i] / max) * (H - B - T);
          if (hgt <= 0) return;
          y -= hgt;
          svg.append(s("rect", { x: L + i * bw + 1, y, width: Math.max(bw - 2, 1), height: hgt, class: "c" + c, "data-series": c }));
        });
        if (n <= 31 && (n <= 8 || i % 2 === 0)) svg.append(s("text", { x: L + i * bw + 2, y: H - B + 14, class: "bar-label" }, tick(i)));
      }
      return h("figure", {}, svg, h("figcaption", {}, h("ul", { class: "legend" },
        shown.map(([name, v], c) => h("li", {}, h("span", { class: "swatch c" + c, "aria-hidden": "true" }), label(name) + ": " + money(sum(v)))))));
    }

    async function budgets() {
      const r = await attempt(null, () => call("GET", "/key/list", { query: { return_full_object: true, sort_by: "spend", sort_order: "desc", size: 100 } }));
      if (!r) return;
      for (const k of r.keys) names[k.token] = k.key_alias || k.key_name;
      const watch = r.keys.filter((k) => k.max_budget !== null && k.max_budget !== undefined && k.spend >= NEAR * k.max_budget);
      clear(budgetHost).append(table("Keys near or over budget", [
        { label: "Key", value: (k) => k.key_alias || k.key_name }, { label: "Spend", num: true, value: (k) => money(k.spend) },
        { label: "Max budget", num: true, value: (k) => money(k.max_budget) },
        { label: "State", value: (k) => k.spend >= k.max_budget ? h("span", { class: "over" }, "over budget") : h("span", { class: "near" }, Math.round(100 * k.spend / k.max_budget) + "% of budget") },
      ], watch, "No key is near its budget."));
    }
    if (me.readsAll) {
      const teams = await attempt(null, () => call("GET", "/team/list"));
      for (const t of teams || []) names["t:" + t.team_id] = t.team_alias || t.team_id;
    }
    await draw("week", "api_key");
  },
};
function sum(v) { return v.reduce((a, b) => a + b, 0); }
