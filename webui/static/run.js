// Run page: replays the run's events from the start, then follows it live; `end` carries the result.
// EventSource resends Last-Event-ID on reconnect, so a dropped connection resumes where it stopped.
"use strict";
(function () {
  const root = document.getElementById("run");
  if (!root) { return; }
  const log = document.getElementById("event-log");
  const streamState = document.getElementById("stream-state");
  const status = document.getElementById("run-status");
  const stages = {};  // index -> {ok, failed, skipped}

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

  function step(index) {
    return document.getElementById("stage-" + index);
  }

  function markStage(stage, event) {
    if (!stage) { return; }
    const counts = stages[stage.index] || (stages[stage.index] = { ok: 0, failed: 0, skipped: 0 });
    if (event.event === "runner_on_ok") { counts.ok += 1; }
    if (event.event === "runner_on_skipped") { counts.skipped += 1; }
    if (event.failed) { counts.failed += 1; }
    for (let i = 1; i <= stage.total; i += 1) {
      const li = step(i);
      if (!li) { continue; }
      const c = stages[i];
      if (i === stage.index) {
        li.dataset.state = c && c.failed ? "failed" : "running";
      } else if (i < stage.index && c) {
        li.dataset.state = c.failed ? "failed" : (c.ok ? "ok" : "skipped");
      }
    }
    const name = step(stage.index) && step(stage.index).querySelector(".name");
    if (name && name.textContent !== stage.name) { name.textContent = stage.name; }
    document.getElementById("current-stage").textContent = stage.index + "/" + stage.total + " " + stage.name;
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
    if (event.task) { document.getElementById("current-task").textContent = event.task; }
    markStage(event.stage, event);
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
