// The dashboard's script (built into the pool's binary; no library, no build step).
// It reads the JSON API when the page opens and then follows the live feed
// (/api/v1/events: one summary a second over one request), so an open page costs
// the pool one connection, not a poll of every route. Text from the pool (user and
// worker names) is only ever set as text, never as HTML.
"use strict";

(function () {
  const LIVE_POINTS = 3600; // live samples kept per line: an hour at one a second
  const CHART_LINES = 8; // workers drawn in a per-worker chart
  const HISTORY_REFRESH_MS = 60000; // the five-minute periods are read again this often
  const USER_REFRESH_EVERY = 5; // a user's page reads its ledger part every 5 summaries

  // ----- formatting -----

  function hashrate(h) {
    const units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    let i = 0;
    let v = Number(h) || 0;
    while (v >= 1000 && i < units.length - 1) {
      v /= 1000;
      i += 1;
    }
    return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " " + units[i];
  }

  function ago(ms, now) {
    if (!ms) return "never";
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function clock(ms, seconds) {
    const d = new Date(ms);
    const two = (n) => String(n).padStart(2, "0");
    return two(d.getHours()) + ":" + two(d.getMinutes()) + (seconds ? ":" + two(d.getSeconds()) : "");
  }

  function btc(sat) {
    if (sat === null || sat === undefined) return "–";
    return (sat / 1e8).toFixed(8).replace(/\.?0+$/, "") + " BTC";
  }

  function percent(part, whole) {
    if (!whole) return "–";
    return ((100 * part) / whole).toFixed(2) + " %";
  }

  function workerName(w) {
    return w.worker === "" ? "(none)" : w.worker;
  }

  // A worker's refused shares by reason: "stale-share 2 · duplicate-share 1", or "–".
  function rejectReasons(w) {
    const reasons = Object.entries(w.rejected_by_reason || {});
    return reasons.length === 0 ? "–" : reasons.map(([r, n]) => r + " " + n).join(" · ");
  }

  // ----- the DOM -----

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children || []) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function userLink(user) {
    return el("a", { href: "/user/" + encodeURIComponent(user) }, [user]);
  }

  function setRows(table, rows) {
    const body = document.querySelector(table + " tbody");
    if (body) body.replaceChildren(...rows);
  }

  function cell(content, cls) {
    return el("td", cls ? { class: cls } : {}, [content]);
  }

  function cards(items) {
    const box = document.getElementById("cards");
    if (!box) return;
    box.replaceChildren(
      ...items.map(([label, value, sub]) =>
        el("div", { class: "card" }, [
          el("div", { class: "label" }, [label]),
          el("div", { class: "value", title: String(value) }, [value]),
          el("div", { class: "sub" }, [sub || ""]),
        ])
      )
    );
  }

  function definitions(id, items) {
    const dl = document.getElementById(id);
    if (!dl) return;
    const parts = [];
    for (const [k, v] of items) parts.push(el("dt", {}, [k]), el("dd", {}, [v]));
    dl.replaceChildren(...parts);
  }

  function status(text, cls) {
    const b = document.getElementById("live");
    if (!b) return;
    b.textContent = text;
    b.className = "badge " + (cls || "");
  }

  // ----- charts: SVG drawn here -----

  // lines: [{name, cls, points: [[ms, h/s]], live}]
  function chart(id, lines) {
    const box = document.getElementById(id);
    if (!box) return;
    const W = Math.max(300, box.clientWidth || 1000), H = 240, L = 70, R = 10, T = 10, B = 24;
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    const all = lines.flatMap((l) => l.points);
    if (all.length === 0) {
      root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no shares yet"));
      box.replaceChildren(root);
      return;
    }
    let t0 = Math.min(...all.map((p) => p[0]));
    let t1 = Math.max(...all.map((p) => p[0]));
    if (t1 - t0 < 60000) t0 = t1 - 60000;
    const top = Math.max(...all.map((p) => p[1])) * 1.15 || 1;
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    for (let i = 0; i <= 4; i += 1) {
      const v = (top * i) / 4;
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: i === 0 ? "axis" : "grid" }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, hashrate(v)));
    }
    const seconds = t1 - t0 < 600000;
    for (let i = 0; i <= 5; i += 1) {
      const t = t0 + ((t1 - t0) * i) / 5;
      root.append(svg("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle" }, clock(t, seconds)));
    }
    for (const line of lines) {
      if (line.points.length === 0) continue;
      const cls = line.cls + (line.live ? " live" : "");
      if (line.points.length === 1) {
        const [t, v] = line.points[0];
        root.append(svg("circle", { cx: x(t), cy: y(v), r: 3, class: cls }));
      } else {
        const pts = line.points.map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
        root.append(svg("polyline", { points: pts, class: cls }));
      }
    }
    box.replaceChildren(root);
  }

  function legend(id, names) {
    const box = document.getElementById(id);
    if (!box) return;
    box.replaceChildren(
      ...names.map((n, i) => el("span", {}, [el("span", { class: "swatch c" + (i % 8) }), n]))
    );
  }

  // ----- the API -----

  async function api(path) {
    const r = await fetch(path, { headers: { accept: "application/json" } });
    if (!r.ok) {
      const e = new Error(path + ": " + r.status);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  // ----- live samples (this page's memory, bounded) -----

  const live = new Map(); // key -> [[ms, h/s]]
  function sample(key, t, v) {
    let s = live.get(key);
    if (!s) {
      s = [];
      live.set(key, s);
    }
    // A summary computed for a new subscriber may cross one of the feed's: keep time order.
    if (s.length > 0 && t <= s[s.length - 1][0]) return;
    s.push([t, v]);
    if (s.length > LIVE_POINTS) s.splice(0, s.length - LIVE_POINTS);
  }
  const workerKey = (w) => w.user + "\u0000" + w.worker;

  // The five-minute periods, each drawn at the middle of its time so far: a closed period at
  // its middle, the current one at the middle of what has passed of it (the API computes its
  // hashrate over that part). The current period counts too: after a restart with no miner
  // back yet, the shares read from the ledger for it would be drawn nowhere until it closed.
  function periods(points, periodSecs, now) {
    const period = periodSecs * 1000;
    return points
      .filter((p) => p.start_ms < now)
      .map((p) => [p.start_ms + Math.min(period, now - p.start_ms) / 2, p.hashrate]);
  }

  // ----- the pool's page -----

  function poolPage() {
    let poolHistory = [];
    let poolPeriod = 300;
    let workerHistories = { period_secs: 300, items: [] };
    let lastBlocks = null;
    let lastSummary = null;

    async function loadHistory() {
      try {
        const [pool, workers] = await Promise.all([
          api("/api/v1/hashrate"),
          api("/api/v1/hashrate/workers?limit=" + CHART_LINES),
        ]);
        poolHistory = pool.points;
        poolPeriod = pool.period_secs;
        workerHistories = workers;
        drawCharts();
      } catch (e) {
        status("history unavailable", "warn");
      }
    }

    async function loadBlocks() {
      try {
        const page = await api("/api/v1/blocks?limit=20");
        drawBlocks(page.items);
      } catch (e) {
        const note = document.getElementById("blocks-note");
        if (note) note.textContent = "blocks unavailable now (" + e.message + "); retried on the next block";
        lastBlocks = null;
      }
    }

    function drawCharts() {
      const now = Date.now();
      chart("pool-chart", [
        { cls: "c0", points: periods(poolHistory, poolPeriod, now) },
        { cls: "c1", points: live.get("pool") || [], live: true },
      ]);
      legend("pool-legend", ["five-minute periods", "ten-minute estimate (live)"]);
      const lines = [];
      const names = [];
      const shown = new Set();
      workerHistories.items.slice(0, CHART_LINES).forEach((w) => {
        shown.add(workerKey(w));
        const i = names.length;
        names.push(w.user + " · " + workerName(w));
        lines.push({ cls: "c" + (i % 8), points: periods(w.points, workerHistories.period_secs, now) });
        lines.push({ cls: "c" + (i % 8), points: live.get(workerKey(w)) || [], live: true });
      });
      // Workers that appeared since the histories were read: their live line.
      if (lastSummary) {
        for (const w of lastSummary.workers) {
          if (names.length >= CHART_LINES || shown.has(workerKey(w))) continue;
          const i = names.length;
          names.push(w.user + " · " + workerName(w));
          lines.push({ cls: "c" + (i % 8), points: live.get(workerKey(w)) || [], live: true });
        }
      }
      chart("worker-chart", lines);
      legend("worker-legend", names);
    }

    function drawBlocks(blocks) {
      const now = Date.now();
      setRows(
        "#blocks",
        blocks.map((b) => {
          let payouts = "–";
          if (b.payout) {
            const list = el(
              "ul",
              {},
              b.payout.payouts.map((p) => el("li", {}, [userLink(p.user), " " + btc(p.amount_sat)]))
            );
            payouts = el("details", {}, [
              el("summary", {}, [b.payout.scheme + ": " + b.payout.payouts.length + " user(s), fee " + btc(b.payout.fee_sat)]),
              list,
            ]);
          }
          const cls = b.status === "accepted" || b.status === "mature" ? "ok" : b.status === "rejected" || b.status === "orphaned" ? "bad" : "warn";
          const st = el("span", { class: "badge " + cls, title: b.rejection_reason || "" }, [b.status]);
          const by = el("span", {}, [userLink(b.user), b.worker ? " · " + b.worker : ""]);
          return el("tr", { "data-hash": b.hash }, [
            cell(String(b.height), "num"),
            el("td", { class: "hash", title: b.hash }, [b.hash.slice(0, 16) + "…"]),
            cell(b.time_ms ? ago(b.time_ms, now) : "–"),
            el("td", {}, [by]),
            el("td", {}, [st]),
            cell(btc(b.reward_sat), "num"),
            el("td", {}, [payouts]),
          ]);
        })
      );
      const note = document.getElementById("blocks-note");
      if (note) note.textContent = blocks.length === 0 ? "no block found yet" : "";
    }

    function onSummary(s) {
      lastSummary = s;
      const p = s.pool;
      const now = p.time_ms;
      sample("pool", now, p.hashrate);
      for (const w of s.workers) sample(workerKey(w), now, w.hashrate);
      const node = p.node;
      cards([
        ["Pool hashrate", hashrate(p.hashrate), "ten-minute estimate"],
        ["Workers", String(p.workers), p.users + " user(s)"],
        ["Connections", String(p.connections.set_up), "of " + p.connections.max + " · " + (p.channels.extended + p.channels.standard) + " channel(s)"],
        ["Shares", String(p.shares.accepted), p.shares.rejected + " rejected · " + percent(p.shares.accepted, p.shares.accepted + p.shares.rejected) + " accepted"],
        ["Blocks", String(p.blocks.found), p.blocks.accepted + " accepted · " + p.blocks.rejected + " rejected · " + p.blocks.pending + " pending"],
        ["Node tip", node.tip_height === null ? "–" : String(node.tip_height), node.reachable ? "reachable" : "unreachable"],
        ["Template age", node.template_age_secs === null ? "–" : node.template_age_secs.toFixed(0) + " s", "work height " + (node.work_height === null ? "–" : node.work_height)],
      ]);
      setRows(
        "#workers",
        s.workers.map((w) =>
          el("tr", { "data-user": w.user, "data-worker": w.worker }, [
            el("td", {}, [userLink(w.user)]),
            cell(workerName(w)),
            cell(hashrate(w.hashrate), "num hashrate"),
            cell(w.declared_hashrate ? hashrate(w.declared_hashrate) : "–", "num declared"),
            cell(String(w.accepted_shares), "num"),
            cell(String(w.rejected_shares), "num"),
            cell(rejectReasons(w), "reasons"),
            cell(percent(w.accepted_shares, w.accepted_shares + w.rejected_shares), "num rate"),
            cell(ago(w.last_share_ms, now), "last-share"),
            cell(String(w.blocks_found), "num"),
          ])
        )
      );
      const note = document.getElementById("workers-note");
      if (note) {
        note.textContent =
          p.workers > s.workers.length
            ? "The " + s.workers.length + " workers with the highest hashrate of " + p.workers + "; every worker: /api/v1/workers."
            : p.workers === 0 ? "no worker yet" : "";
      }
      setRows(
        "#reasons",
        Object.entries(p.shares.rejected_by_reason).map(([r, n]) => el("tr", {}, [cell(r), cell(String(n), "num")]))
      );
      definitions("node", [
        ["Reachable", node.reachable ? "yes" : "no"],
        ["Tip", node.tip_hash === null ? "–" : node.tip_height + " · " + node.tip_hash],
        ["Mining height", node.work_height === null ? "–" : String(node.work_height)],
        ["Template age", node.template_age_secs === null ? "–" : node.template_age_secs.toFixed(1) + " s"],
        ["Last answer", node.last_answer_ms ? ago(node.last_answer_ms, now) : "never"],
        ["Failed requests", String(node.failures)],
        ["Ledger", p.ledger ? "on" : "off"],
      ]);
      const blocks = [p.blocks.found, p.blocks.accepted, p.blocks.rejected].join("/");
      if (blocks !== lastBlocks) {
        lastBlocks = blocks;
        loadBlocks();
      }
      drawCharts();
    }

    loadHistory();
    setInterval(loadHistory, HISTORY_REFRESH_MS);
    follow(onSummary);
  }

  // ----- a user's page -----

  function userPage() {
    const prefix = "/user/";
    const user = decodeURIComponent(location.pathname.slice(prefix.length));
    const nameBox = document.getElementById("user-name");
    if (nameBox) nameBox.textContent = user;
    document.title = "blvm-stratum-v2 · " + user;
    let histories = { period_secs: 300, items: [] };
    let detail = null;
    let summaries = 0;
    const q = encodeURIComponent(user);

    async function loadHistory() {
      try {
        histories = await api("/api/v1/hashrate/workers?limit=" + CHART_LINES + "&user=" + q);
        drawChart();
      } catch (e) {
        status("history unavailable", "warn");
      }
    }

    async function loadDetail() {
      const box = document.getElementById("user-status");
      try {
        detail = await api("/api/v1/users/" + q);
        if (box) box.textContent = "";
        drawDetail();
      } catch (e) {
        if (box) {
          box.textContent =
            e.status === 404 ? "The pool knows no user " + user + " (no worker, balance or share in the window)." : "The user cannot be read now (" + e.message + ").";
        }
      }
    }

    function drawChart() {
      const now = Date.now();
      const lines = [];
      const names = [];
      histories.items.slice(0, CHART_LINES).forEach((w, i) => {
        names.push(workerName(w));
        lines.push({ cls: "c" + (i % 8), points: periods(w.points, histories.period_secs, now) });
        lines.push({ cls: "c" + (i % 8), points: live.get(workerKey(w)) || [], live: true });
      });
      chart("worker-chart", lines);
      legend("worker-legend", names);
    }

    function drawDetail() {
      if (!detail) return;
      const now = Date.now();
      const d = detail;
      const win = d.pplns_window;
      cards([
        ["Hashrate", hashrate(d.hashrate), "ten-minute estimate"],
        ["Workers", String(d.workers), d.accepted_shares + " shares accepted"],
        ["Accept rate", percent(d.accepted_shares, d.accepted_shares + d.rejected_shares), d.rejected_shares + " rejected"],
        ["Balance", d.earned_sat === null ? "–" : btc(d.earned_sat), d.immature_sat ? btc(d.immature_sat) + " immature (under 100 confirmations)" : "earned from blocks in the chain"],
        ["In the PPLNS window", win ? String(win.shares) + " shares" : "–", win ? (100 * win.fraction).toFixed(2) + " % of the window" : "no ledger"],
        ["Blocks found", String(d.blocks_found), "last share " + ago(d.last_share_ms, now)],
      ]);
      setRows(
        "#workers",
        d.workers_list.map((w) =>
          el("tr", { "data-worker": w.worker }, [
            cell(workerName(w)),
            cell(hashrate(w.hashrate), "num hashrate"),
            cell(w.declared_hashrate ? hashrate(w.declared_hashrate) : "–", "num declared"),
            cell(String(w.accepted_shares), "num"),
            cell(String(w.rejected_shares), "num"),
            cell(rejectReasons(w), "reasons"),
            cell(percent(w.accepted_shares, w.accepted_shares + w.rejected_shares), "num rate"),
            cell(ago(w.last_share_ms, now), "last-share"),
            cell(String(w.blocks_found), "num"),
          ])
        )
      );
      definitions(
        "window",
        win
          ? [
              ["Window size", win.window_difficulty.toPrecision(6) + " difficulty"],
              ["Shares in the window", String(win.window_shares) + " (newest: " + win.last_share_id + ")"],
              ["This user's shares", String(win.shares)],
              ["Their difficulty", win.difficulty.toPrecision(6)],
              ["Their part", (100 * win.fraction).toFixed(4) + " %"],
            ]
          : [["Window", "not available (no ledger reader, or no work yet)"]]
      );
      setRows(
        "#reasons",
        d.rejected.map((r) => el("tr", {}, [cell(r.worker === "" ? "(none)" : r.worker), cell(r.reason), cell(String(r.count), "num")]))
      );
    }

    function onSummary(s) {
      const now = s.pool.time_ms;
      for (const w of s.workers) if (w.user === user) sample(workerKey(w), now, w.hashrate);
      summaries += 1;
      if (summaries % USER_REFRESH_EVERY === 1) loadDetail();
      drawChart();
    }

    loadHistory();
    setInterval(loadHistory, HISTORY_REFRESH_MS);
    follow(onSummary);
  }

  // ----- the live feed -----

  function follow(onSummary) {
    const source = new EventSource("/api/v1/events");
    source.addEventListener("summary", (e) => {
      let s;
      try {
        s = JSON.parse(e.data);
      } catch (err) {
        status("bad summary", "bad");
        return;
      }
      status("live", "ok");
      onSummary(s);
    });
    source.addEventListener("error", () => status("reconnecting…", "warn"));
  }

  const page = document.body.dataset.page;
  if (page === "user") userPage();
  else poolPage();
})();
