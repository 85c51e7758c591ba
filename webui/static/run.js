// Run page: replays the run's events from the start, then follows it live; `end` carries the result.
// EventSource resends Last-Event-ID on reconnect, so a dropped connection resumes where it stopped.
"use strict";
(function () {
  const root = document.getElementById("run");
  if (!root) { return; }
  const log = document.getElementById("event-log");
  const streamState = document.getElementById("stream-state");
  const status = document.getElementById("run-status");

  function setStatus(value) {
    status.textContent = value;
    status.dataset.status = value;
    status.className = "status " + value;
  }

  function line(text, cls) {
    if (!text) { return; }
    const span = document.createElement("span");
    if (cls) { span.className = cls; }
    span.textContent = text.replace(/\s+$/, "") + "\n";
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    log.append(span);
    if (atBottom) { log.scrollTop = log.scrollHeight; }
  }

  function step(name) {
    return root.querySelector('.stages li[data-testid="stage-step-' + name + '"]');
  }

  // --- progress events (our callback): stages on a timeline, stage 3's checks as a table ---------
  const timeline = { order: [], rows: {} };  // stage -> {started, duration, state}
  const checks = [];
  const VERDICT_ORDER = { fail: 0, pass: 1, skip: 2 };

  function drawTimeline() {
    const box = document.getElementById("timeline");
    document.getElementById("timeline-card").hidden = timeline.order.length === 0;
    const longest = Math.max(1, ...timeline.order.map(function (n) { return timeline.rows[n].duration || 0; }));
    box.replaceChildren();
    timeline.order.forEach(function (name) {
      const row = timeline.rows[name];
      const div = document.createElement("div");
      div.className = "row";
      div.dataset.stage = name;
      div.dataset.state = row.state;
      div.dataset.testid = "timeline-" + name;
      const label = document.createElement("span");
      label.textContent = name;
      const track = document.createElement("span");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.display = "block";
      bar.style.width = (row.duration === null ? 2 : Math.max(1, 100 * row.duration / longest)) + "%";
      track.append(bar);
      const secs = document.createElement("span");
      secs.className = "secs";
      secs.textContent = row.duration === null ? "…" : row.duration.toFixed(1) + " s";
      div.append(label, track, secs);
      box.append(div);
    });
  }

  function fmt(value) {
    if (value === null || value === undefined) { return "-"; }
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function drawChecks() {
    document.getElementById("checks-card").hidden = checks.length === 0;
    const body = document.getElementById("checks");
    body.replaceChildren();
    const sorted = checks.slice().sort(function (a, b) {
      return (VERDICT_ORDER[a.verdict] ?? 3) - (VERDICT_ORDER[b.verdict] ?? 3) || a.n - b.n;
    });
    sorted.forEach(function (check) {
      const tr = document.createElement("tr");
      tr.dataset.verdict = check.verdict;
      tr.dataset.check = check.name;
      tr.title = check.message || "";
      [check.name, check.node, fmt(check.observed) + (check.unit ? " " + check.unit : ""),
        (check.op || "") + " " + fmt(check.threshold) + (check.unit ? " " + check.unit : ""), check.verdict]
        .forEach(function (text) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        });
      body.append(tr);
    });
    const failed = checks.filter(function (c) { return c.verdict === "fail"; }).length;
    document.getElementById("checks-summary").textContent =
      "(" + checks.length + " checks, " + failed + " failed)";
  }

  function progress(event) {
    const name = event.stage;
    if (event.type === "stage_start" && name) {
      timeline.rows[name] = { started: event.time, duration: null, state: "running" };
      if (timeline.order.indexOf(name) < 0) { timeline.order.push(name); }
      const li = step(name);
      if (li) { li.dataset.state = "running"; }
      document.getElementById("current-stage").textContent = name;
      line("# stage " + name, "meta");
      drawTimeline();
    } else if (event.type === "stage_end" && name) {
      const row = timeline.rows[name] || (timeline.rows[name] = { started: null });
      row.duration = event.duration_s;
      row.state = event.result;
      if (timeline.order.indexOf(name) < 0) { timeline.order.push(name); }
      const li = step(name);
      if (li) { li.dataset.state = event.result; }
      line("# stage " + name + ": " + event.result + " in " + event.duration_s + " s", event.result === "failed" ? "failed" : "meta");
      drawTimeline();
    } else if (event.type === "check") {
      checks.push(Object.assign({ n: checks.length }, event));
      drawChecks();
    } else if (event.type === "failure") {
      line("# failure in stage " + name + ": " + (event.check || "") + " on " + (event.host || "") + ": " + fmt(event.observed), "failed");
    }
  }

  function finish(result) {
    setStatus(result.status);
    const box = document.getElementById("run-result");
    box.hidden = false;
    box.dataset.status = result.status;
    document.getElementById("run-result-status").textContent =
      result.status === "successful" ? "Finished successfully" : "Ended: " + result.status + (result.rc !== null ? " (rc " + result.rc + ")" : "");
    document.getElementById("run-duration").textContent = result.duration_s ? result.duration_s + " s" : "";
    const failure = document.getElementById("run-failure");
    failure.hidden = !result.failure;
    failure.textContent = result.failure || "";
    const names = result.stages || {};
    document.querySelectorAll(".stages li").forEach(function (li) {
      const name = li.querySelector(".name").textContent;
      if (names[name]) { li.dataset.state = names[name]; }
      else if (li.dataset.state === "pending" || li.dataset.state === "running") {
        li.dataset.state = result.status === "successful" && li.dataset.state === "running" ? "ok" : li.dataset.state;
      }
    });
    document.getElementById("current-task").textContent = "-";  // the last task started may have been skipped
    streamState.textContent = "run ended";
    streamState.dataset.state = "ended";
  }

  const source = new EventSource(root.dataset.events);
  source.onopen = function () { streamState.textContent = "live"; streamState.dataset.state = "live"; };
  source.onerror = function () {
    if (streamState.dataset.state === "ended") { return; }
    if (source.readyState === EventSource.CLOSED) {
      // refused, not dropped (429: too many streams open, 401: logged out): the browser will not retry
      streamState.textContent = "live updates stopped (too many open tabs, or logged out): reload the page";
      streamState.dataset.state = "refused";
      return;
    }
    streamState.textContent = "reconnecting…"; streamState.dataset.state = "reconnecting";
  };
  source.onmessage = function (message) {
    const event = JSON.parse(message.data);
    log.dataset.lastSeq = message.lastEventId;
    if (event.event === "accepted") {
      line("# " + event.action + " accepted for " + event.user + ": " + event.playbook, "meta");
      return;
    }
    if (event.event === "status") {
      setStatus(event.status);
      line("# status: " + event.status, "meta");
      return;
    }
    if (event.event === "progress") {
      progress(event);
      return;
    }
    if (event.task) { document.getElementById("current-task").textContent = event.task; }
    let cls = "";
    if (event.failed) { cls = "failed"; }
    else if (event.event === "playbook_on_task_start" || event.event === "playbook_on_play_start") { cls = "task"; }
    else if (event.event === "runner_on_ok") { cls = "ok"; }
    line(event.stdout, cls);
  };
  source.addEventListener("end", function (message) {
    source.close();
    log.dataset.lastSeq = message.lastEventId;
    finish(JSON.parse(message.data));
  });
})();
