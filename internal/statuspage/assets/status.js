// The xlb status page: fetches status.json every 1.5 s and redraws. Groups
// (VIPs or pools) are collapsed unless few; a click opens one. Read-only.
"use strict";
(function () {
  const REFRESH_MS = 1500;
  const state = { page: 1, filter: "", open: new Set(), timer: 0, last: null };
  const $ = (id) => document.getElementById(id);

  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const num = (n) => {
    n = Number(n || 0);
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return n % 1 ? n.toFixed(1) : String(n);
  };
  const rate = (n) => (n ? num(n) + "/s" : "0/s");
  const bits = (bytesPerSec) => (bytesPerSec ? num(bytesPerSec * 8) + "b/s" : "0b/s");
  const pct = (f) => (f * 100).toFixed(1) + "%";
  const since = (t, now) => {
    if (!t) return "-";
    let s = Math.max(0, Math.round((now - Date.parse(t)) / 1000));
    if (s < 90) return s + "s";
    if (s < 5400) return Math.round(s / 60) + "m";
    if (s < 172800) return Math.round(s / 3600) + "h";
    return Math.round(s / 86400) + "d";
  };

  function query() {
    const p = new URLSearchParams();
    if (state.filter) p.set("q", state.filter);
    if (state.page > 1) p.set("page", String(state.page));
    for (const g of state.open) p.append("open", g);
    return "status.json" + (p.toString() ? "?" + p : "");
  }

  async function refresh() {
    clearTimeout(state.timer);
    try {
      const r = await fetch(query(), { cache: "no-store" });
      if (!r.ok) throw new Error(r.status + " " + (await r.text()));
      const a = await r.json();
      state.last = a;
      render(a);
      $("conn").textContent = "";
      $("conn").className = "conn";
    } catch (e) {
      $("conn").textContent = "not updating: " + e.message;
      $("conn").className = "conn stale";
    }
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  function render(a) {
    const now = Date.parse(a.time) || Date.now();
    document.title = a.title + " status";
    $("title").textContent = a.title;
    $("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    const s = a.summary;
    const pills = [
      `${s.groups} ${esc(a.group_label)}s`, `${s.members} ${esc(a.member_label)}s`,
      `<span class="st-up">${s.up} up</span>`, `<span class="st-down">${s.down} down</span>`,
      `<span class="st-draining">${s.draining} draining</span>`, `<span class="st-unknown">${s.unknown} unknown</span>`,
    ];
    if (s.panic) pills.push(`<span class="panic">${s.panic} in panic</span>`);
    $("summary").innerHTML = pills.map((p) => `<span class="pill">${p}</span>`).join("");
    const err = $("error");
    err.hidden = !a.error;
    err.textContent = a.error || "";
    $("pageinfo").textContent = `page ${a.page} of ${a.pages} (${a.matched} ${a.group_label}s)`;
    $("prev").disabled = a.page <= 1;
    $("next").disabled = a.page >= a.pages;
    state.page = a.page;
    $("groups").innerHTML = groupsHTML(a, now);
    // Widths through the CSSOM: the page's policy refuses inline styles.
    for (const b of document.querySelectorAll(".bar[data-share]")) b.style.width = Math.round(b.dataset.share * 40) + "px";
    $("routes").innerHTML = routesHTML(a);
    $("drops").innerHTML = dropsHTML(a);
  }

  function groupsHTML(a, now) {
    const l4 = a.kind === "l4";
    const head = `<tr><th>${esc(a.group_label)}</th><th class="wide">detail</th><th>state</th>
      <th class="num">healthy</th><th class="num">${l4 ? "packets/s" : "requests/s"}</th>
      <th class="num wide">${l4 ? "bits/s" : "requests"}</th><th class="num wide">${l4 ? "packets" : ""}</th></tr>`;
    const rows = a.groups.map((g) => {
      const flags = [];
      if (g.panic) flags.push(`<span class="panic">PANIC</span>`);
      if (g.down) flags.push(`<span class="st-down">${g.down} down</span>`);
      if (g.draining) flags.push(`<span class="st-draining">${g.draining} draining</span>`);
      if (g.error) flags.push(`<span class="err" title="${esc(g.error)}">${esc(g.error)}</span>`);
      if (!flags.length) flags.push(g.healthy > 0 ? `<span class="st-up">ok</span>` : `<span class="st-down">no healthy backend</span>`);
      let html = `<tr class="group${g.open ? " open" : ""}" data-group="${esc(g.name)}">
        <td><b>${esc(g.name)}</b></td><td class="wide muted">${esc(g.detail)}</td><td>${flags.join(" ")}</td>
        <td class="num">${g.healthy}/${g.active}</td>
        <td class="num">${l4 ? rate(g.packet_rate) : rate(g.request_rate)}</td>
        <td class="num wide">${l4 ? bits(g.byte_rate) : num(g.requests)}</td>
        <td class="num wide">${l4 ? num(g.packets) : ""}</td></tr>`;
      if (g.open) html += `<tr class="members"><td colspan="7">${membersHTML(a, g, now)}</td></tr>`;
      return html;
    });
    return `<h2>${esc(a.group_label)}s</h2><div class="wrap"><table id="group-table">${head}${rows.join("")}</table></div>`;
  }

  function membersHTML(a, g, now) {
    const l4 = a.kind === "l4";
    const head = `<tr><th>${esc(a.member_label)}</th><th>state</th><th>admin</th><th>health</th><th>since</th>
      <th class="num">share</th><th class="num">${l4 ? "packets/s" : "requests/s"}</th>
      <th class="num wide">${l4 ? "bits/s" : "in flight"}</th><th class="num wide">${l4 ? "packets" : "failures"}</th>
      <th class="wide">${g.members.some((m) => m.breaker) ? "breaker" : "weight"}</th><th>last error</th></tr>`;
    const rows = g.members.map((m) => {
      const drain = m.drain_until ? ` <span class="muted">until ${new Date(Date.parse(m.drain_until)).toLocaleTimeString()}</span>` : "";
      return `<tr class="member" data-member="${esc(g.name + "|" + m.address)}">
        <td>${esc(m.address)}</td>
        <td class="state st-${esc(m.state)}">${esc(m.state)}</td>
        <td>${esc(m.admin)}${drain}</td><td>${esc(m.health)}</td>
        <td>${since(m.health_since, now)}</td>
        <td class="num"><span class="bar" data-share="${Number(m.share) || 0}"></span>${pct(m.share)}</td>
        <td class="num">${l4 ? rate(m.packet_rate) : rate(m.request_rate)}</td>
        <td class="num wide">${l4 ? bits(m.byte_rate) : num(m.in_flight)}</td>
        <td class="num wide">${l4 ? num(m.packets) : num(m.failures)}</td>
        <td class="wide">${esc(m.breaker || m.weight)}</td>
        <td class="err" title="${esc(m.last_error)}">${esc(m.last_error || "")}</td></tr>`;
    });
    return `<div class="wrap"><table>${head}${rows.join("")}</table></div>`;
  }

  function routesHTML(a) {
    if (!a.routes || !a.routes.length) return "";
    const rows = a.routes.map((r) => `<tr><td>${esc(r.name)}</td><td class="muted">${esc(r.match)}</td>
      <td>${esc(r.pool || r.action)}</td></tr>`);
    return `<h2>routes</h2><div class="wrap"><table><tr><th>route</th><th>match</th><th>pool</th></tr>${rows.join("")}</table></div>`;
  }

  function dropsHTML(a) {
    if (!a.drops || !a.drops.length) return "";
    const rows = a.drops.map((d) => `<tr><td>${esc(d.reason)}</td><td>${esc(d.what || (d.passed ? "passed to the kernel" : "dropped"))}</td>
      <td class="num">${rate(d.rate)}</td><td class="num">${num(d.packets)}</td></tr>`);
    return `<h2>datapath exits that are not forwards</h2><div class="wrap"><table id="drop-table">
      <tr><th>reason</th><th>what</th><th class="num">packets/s</th><th class="num">packets</th></tr>${rows.join("")}</table></div>`;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("groups").addEventListener("click", (e) => {
      const tr = e.target.closest("tr.group");
      if (!tr) return;
      const name = tr.dataset.group;
      if (state.open.has(name)) state.open.delete(name); else state.open.add(name);
      refresh();
    });
    let debounce = 0;
    $("filter").addEventListener("input", (e) => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { state.filter = e.target.value.trim(); state.page = 1; refresh(); }, 250);
    });
    $("prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); refresh(); });
    $("next").addEventListener("click", () => { state.page += 1; refresh(); });
    refresh();
  });
})();
