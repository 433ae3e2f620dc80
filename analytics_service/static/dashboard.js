// Live dashboard: one EventSource per chosen range; every `summary` event redraws in place.
"use strict";

const charts = {};
let source = null;

function digits(currency) {
  return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
    .maximumFractionDigits;
}

function money(amounts) {
  const parts = Object.entries(amounts || {}).map(([currency, minor]) => {
    const fmt = new Intl.NumberFormat("en", { style: "currency", currency });
    return fmt.format(minor / 10 ** digits(currency));
  });
  return parts.length ? parts.join(" · ") : "0";
}

function percent(rate) {
  return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + " %";
}

function ms(value) {
  return value === null || value === undefined ? "–" : value + " ms";
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function list(id, items) {
  const el = document.getElementById(id);
  el.replaceChildren(...items.map((label) => {
    const li = document.createElement("li");
    li.textContent = label;
    return li;
  }));
}

function minuteLabel(start) {
  return new Date(start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function makeCharts() {
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  charts.revenue = new Chart(document.getElementById("revenue-chart"), {
    type: "line",
    data: { labels: [], datasets: [] },
    options: { scales: { y: { beginAtZero: true } }, elements: { point: { radius: 0 } } },
  });
  const orderSets = [
    ["placed", "#3b82f6"], ["confirmed", "#16a34a"], ["rejected", "#f59e0b"], ["cancelled", "#dc2626"],
  ].map(([label, color]) => ({ label, data: [], borderColor: color, backgroundColor: color }));
  charts.orders = new Chart(document.getElementById("orders-chart"), {
    type: "bar",
    data: { labels: [], datasets: orderSets },
    options: { scales: { y: { beginAtZero: true } } },
  });
  charts.outcome = new Chart(document.getElementById("outcome-chart"), {
    type: "doughnut",
    data: {
      labels: ["confirmed", "rejected", "cancelled"],
      datasets: [{ data: [0, 0, 0], backgroundColor: ["#16a34a", "#f59e0b", "#dc2626"] }],
    },
  });
}

function render(s) {
  const w = s.window;
  text("kpi-revenue", money(w.revenue));
  text("kpi-placed", w.placed);
  text("kpi-confirmed", w.confirmed);
  text("kpi-aov", money(w.average_order_value));
  text("kpi-decline", percent(w.payment_decline_rate));
  text("kpi-oos", percent(w.out_of_stock_rate));
  text("kpi-latency", ms(w.latency_ms.p50));
  text("kpi-total-revenue", money(s.totals.revenue));
  text("lat-p50", ms(w.latency_ms.p50));
  text("lat-p90", ms(w.latency_ms.p90));
  text("lat-p99", ms(w.latency_ms.p99));
  text("lat-n", w.latency_ms.count);
  text("grace", s.grace_s);

  const labels = s.series.map((m) => minuteLabel(m.start));
  const currencies = [...new Set(s.series.flatMap((m) => Object.keys(m.revenue)))];
  charts.revenue.data.labels = labels;
  charts.revenue.data.datasets = currencies.map((currency) => ({
    label: currency,
    data: s.series.map((m) => (m.revenue[currency] || 0) / 10 ** digits(currency)),
    borderColor: "#3b82f6",
    backgroundColor: "#3b82f633",
    fill: true,
  }));
  charts.revenue.update();
  charts.orders.data.labels = labels;
  for (const ds of charts.orders.data.datasets) {
    ds.data = s.series.map((m) => m[ds.label]);
  }
  charts.orders.update();
  charts.outcome.data.datasets[0].data = [w.confirmed, w.rejected, w.cancelled];
  charts.outcome.update();

  list("top-revenue", w.top_products.by_revenue.map((p) => `${p.sku} — ${money({ [p.currency]: p.revenue })}`));
  list("top-units", w.top_products.by_units.map((p) => `${p.sku} — ${p.units} units`));
  list("low-stock", s.low_stock.map((a) => `${a.sku}: ${a.available} left (threshold ${a.threshold})`));
  document.body.dataset.version = s.version;
  text("status", `live · updated ${new Date(s.generated_at).toLocaleTimeString()}`);
}

function connect(range) {
  if (source) source.close();
  source = new EventSource(`/api/stream?range=${encodeURIComponent(range)}`);
  source.addEventListener("summary", (e) => render(JSON.parse(e.data)));
  source.onerror = () => text("status", "reconnecting…");
}

function main() {
  makeCharts();
  for (const button of document.querySelectorAll("#range button")) {
    button.addEventListener("click", () => {
      document.querySelectorAll("#range button").forEach((b) => b.classList.remove("active"));
      button.classList.add("active");
      document.body.dataset.range = button.dataset.range;
      connect(button.dataset.range);
    });
  }
  document.body.dataset.range = "15m";
  connect("15m");
}

main();
