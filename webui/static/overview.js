// Overview: one EventSource on /overview/events; every message is a full sample (plus a chart point).
"use strict";
(function () {
  const root = document.getElementById("overview");
  if (!root) { return; }
  const chartSeconds = Number(root.dataset.chartSeconds || 600);
  let points = [];

  function setText(id, value) {
    const el = document.getElementById(id);
    if (el) { el.textContent = value === null || value === undefined || value === "" ? "-" : String(value); }
    return el;
  }

  function setColor(id, color) {
    const el = document.getElementById(id);
    if (!el) { return; }
    el.dataset.color = color || "";
    el.className = "badge " + (color || "unknown");
    el.textContent = color || "unknown";
  }

  function fmt(value, digits) {
    return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
  }

  function when(text) {
    return text ? String(text).replace("T", " ").slice(0, 19) + "Z" : "-";
  }

  function updateLbs(data) {
    // several lbs (LB_STATE_DIRS): each one's live color, and whether they agree
    const list = document.getElementById("lbs");
    list.hidden = !data.lbs;
    list.textContent = "";
    (data.lbs || []).forEach(function (lb) {
      const item = document.createElement("li");
      item.dataset.lb = lb.name;
      item.dataset.color = lb.live || "";
      const badge = document.createElement("span");
      badge.className = "badge " + (lb.live || "unknown");
      badge.textContent = lb.live || "unknown";
      const version = document.createElement("span");
      version.className = "version";
      version.textContent = lb.version || lb.error || "";
      item.append(lb.name + " ", badge, " ", version);
      list.append(item);
    });
    const disagree = document.getElementById("lbs-disagree");
    disagree.hidden = data.lbs_agree !== false;
    disagree.textContent = data.lbs_agree === false ? "load balancers disagree: " + data.lbs_disagreement.join("; ") : "";
  }

  function updateState(data) {
    updateLbs(data);
    setColor("live-color", data.live && data.live.color);
    setText("live-version", data.live && data.live.version);
    setColor("idle-color", data.idle && data.idle.color);
    setText("idle-version", data.idle && data.idle.version);
    let warm = when(data.warm_until);
    if (typeof data.warm_seconds_left === "number") {
      warm += data.warm_seconds_left > 0 ? " (" + Math.round(data.warm_seconds_left / 60) + " min left)" : " (over)";
    }
    setText("warm-until", data.warm_until ? warm : "-");
    const lock = document.getElementById("lock-holder");
    lock.textContent = data.lock_text || "free";
    lock.dataset.held = data.lock ? "true" : "false";
    lock.dataset.stale = data.lock && data.lock.stale ? "true" : "false";
    const dep = data.deployment;
    const abandoned = data.abandoned ? " ABANDONED: " + data.abandoned.reason : "";
    setText("deployment", dep ? dep.id + " (" + dep.stage + ")" + abandoned : "none");
    document.getElementById("deployment").dataset.abandoned = data.abandoned ? "true" : "false";
    const failure = document.getElementById("last-failure");
    failure.hidden = !data.failure_text;
    failure.textContent = data.failure_text ? "failed " + data.failure_text : "";
    const stateError = document.getElementById("state-error");
    stateError.hidden = !data.state_error;
    stateError.textContent = data.state_error || "";
    const active = document.getElementById("active-run");
    active.textContent = "";
    if (data.active_run) {
      const link = document.createElement("a");
      link.href = "/runs/" + encodeURIComponent(data.active_run.id);
      link.textContent = data.active_run.action + " " + data.active_run.id;
      active.append("running: ", link);
    }
    const canAct = document.querySelector(".actions").dataset.canAct === "true";
    document.querySelectorAll("form[data-needs-stale-lock=true] button[type=submit]").forEach(function (b) {
      b.disabled = !(canAct && b.dataset.available === "true" && data.lock && data.lock.stale);
    });
  }

  function updateBackends(data) {
    const haproxyError = document.getElementById("haproxy-error");
    haproxyError.hidden = !(data.haproxy && data.haproxy.error);
    haproxyError.textContent = (data.haproxy && data.haproxy.error) || "";
    ["blue", "green"].forEach(function (color) {
      const row = document.getElementById("backend-" + color);
      const b = (data.backends || {})[color];
      row.dataset.status = b ? b.status : "";
      row.querySelector(".b-status").textContent = b ? b.status : "-";
      row.querySelector(".b-up").textContent = b ? b.servers_up + "/" + b.servers_total : "-";
      row.querySelector(".b-req").textContent = b ? fmt(b.req_per_s, 1) : "-";
      row.querySelector(".b-err").textContent = b ? fmt(b.err_per_s, 2) : "-";
      row.querySelector(".b-rate").textContent = b && b.error_rate !== null ? (100 * b.error_rate).toFixed(2) + " %" : "-";
      row.querySelector(".b-entries").textContent = b ? fmt(b.entries_per_s, 0) : "-";
      const nodes = row.querySelector(".b-nodes");
      nodes.textContent = "";
      ((b && b.servers) || []).forEach(function (s) {
        const span = document.createElement("span");
        span.className = "node " + s.status;
        span.id = "node-" + s.name;
        span.dataset.testid = "node-" + s.name;
        span.dataset.status = s.status;
        span.title = (s.addr || "") + " check " + (s.check_status || "-") + ", " + s.stot + " requests, " + s.hrsp_5xx + " 5xx";
        span.textContent = s.name + " " + s.status;
        nodes.append(span);
      });
    });
  }

  function drawChart() {
    const svg = document.getElementById("rate-chart");
    const width = Math.max(200, Math.round(svg.clientWidth || 640)), height = 180, top = 16, bottom = 16;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.querySelector(".xlabel").setAttribute("x", String(width - 4));
    const now = Date.now() / 1000;
    const recent = points.filter(function (p) { return p.t >= now - chartSeconds; });
    let max = 1;
    recent.forEach(function (p) {
      ["blue", "green", "blue_5xx", "green_5xx"].forEach(function (k) { if (p[k] > max) { max = p[k]; } });
    });
    max = Math.ceil(max * 1.1);
    function line(key) {
      return recent.filter(function (p) { return p[key] !== null && p[key] !== undefined; }).map(function (p) {
        const x = width - ((now - p.t) / chartSeconds) * width;
        const y = height - bottom - (p[key] / max) * (height - top - bottom);
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
    }
    const lines = svg.querySelectorAll("polyline");
    lines[0].setAttribute("points", line("blue"));
    lines[1].setAttribute("points", line("green"));
    lines[2].setAttribute("points", line("blue_5xx"));
    lines[3].setAttribute("points", line("green_5xx"));
    svg.querySelector(".ymax").textContent = max + " req/s";
    svg.querySelector(".xlabel").textContent = "last " + Math.round(chartSeconds / 60) + " min";
    svg.dataset.points = String(recent.length);
  }

  // the recent-runs table follows too: re-read when the running run changes (one started or ended)
  let activeId = (document.getElementById("active-run").querySelector("a") || {}).textContent || null;
  function refreshRecent() {
    fetch("/api/runs", { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        const tbody = document.querySelector("#recent-runs tbody");
        tbody.textContent = "";
        body.runs.slice(0, 5).forEach(function (run) {
          const tr = document.createElement("tr");
          const cells = [null, run.action + " " + Object.values(run.params).join(" "), run.user, null, run.duration_s + " s"];
          cells.forEach(function (text, i) {
            const td = document.createElement("td");
            if (i === 0) {
              const link = document.createElement("a");
              link.href = "/runs/" + encodeURIComponent(run.id);
              link.textContent = run.id;
              td.append(link);
            } else if (i === 3) {
              const span = document.createElement("span");
              span.className = "status " + run.status;
              span.textContent = run.status;
              td.append(span);
            } else {
              td.textContent = text;
            }
            tr.append(td);
          });
          tbody.append(tr);
        });
      })
      .catch(function () { /* the next change tries again */ });
  }

  const source = new EventSource(root.dataset.events);
  source.onerror = function () {
    // refused, not dropped (429: too many streams open, 401: logged out): the browser will not retry
    if (source.readyState === EventSource.CLOSED) {
      setText("sample-time", "live updates stopped (too many open tabs, or logged out): reload the page");
    }
  };
  source.onmessage = function (message) {
    const data = JSON.parse(message.data);
    if (data.chart) { points = data.chart; }
    if (data.point) { points.push(data.point); }
    const cutoff = Date.now() / 1000 - chartSeconds;
    points = points.filter(function (p) { return p.t >= cutoff; });
    setText("sample-time", "as of " + new Date(data.at * 1000).toLocaleTimeString());
    if (data.error) { setText("state-error", data.error); return; }
    updateState(data);
    const nowActive = data.active_run ? data.active_run.action + " " + data.active_run.id : null;
    if (nowActive !== activeId) { activeId = nowActive; refreshRecent(); }
    updateBackends(data);
    drawChart();
  };
})();
