// Stella console: keyboard shortcuts, retry links, inputs JSON check, live refresh.
(function () {
  "use strict";
  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  function openStart() {
    var start = document.getElementById("start");
    if (!start) { window.location.href = "/console/runs#start"; return; }
    start.open = true;
    var first = start.querySelector("input:not([type=hidden])");
    if (first) { first.focus(); }
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var help = document.getElementById("help");
    if (event.key === "f") {
      var filter = document.querySelector("[data-filter]");
      if (filter) { event.preventDefault(); filter.focus(); }
    } else if (event.key === "r") {
      event.preventDefault(); window.location.reload();
    } else if (event.key === "s") {
      event.preventDefault(); openStart();
    } else if (event.key === "?") {
      event.preventDefault();
      if (help && !help.open) { help.showModal(); }
    }
  });
  function busy() {
    return typing(document.activeElement) ||
      Array.prototype.some.call(document.querySelectorAll("textarea"), function (t) {
        return t.value.trim() !== t.defaultValue.trim();
      });
  }
  function failed(box, why) {
    // The same "No data / Retry" box the server renders; text only, never markup.
    var div = document.createElement("div");
    div.className = "nodata";
    div.setAttribute("role", "status");
    var p = document.createElement("p");
    var strong = document.createElement("strong");
    strong.textContent = "No data:";
    p.appendChild(strong);
    p.appendChild(document.createTextNode(" live update failed (" + why + ")."));
    var again = document.createElement("p");
    var link = document.createElement("a");
    link.className = "button"; link.href = ""; link.textContent = "Retry";
    link.addEventListener("click", function (event) {
      event.preventDefault(); window.location.reload();
    });
    again.appendChild(link);
    div.appendChild(p); div.appendChild(again);
    box.replaceChildren(div);
  }
  // Poll the page's fragment every 2 s and swap it in; stop on error or once the run ends.
  function live(box) {
    var pause = document.querySelector("[data-live-pause]");
    var note = document.querySelector("[data-live-note]");
    var url = box.dataset.liveSrc + window.location.search;
    var timer = null;
    var inflight = false;
    function stop(text) {
      if (timer !== null) { window.clearInterval(timer); timer = null; }
      if (note) { note.textContent = text; }
    }
    function tick() {
      if (inflight || (pause && pause.checked) || busy() || document.hidden) { return; }
      inflight = true;
      var controller = new AbortController();
      var limit = window.setTimeout(function () { controller.abort(); }, 10000);
      fetch(url, { credentials: "same-origin", cache: "no-store", signal: controller.signal })
        .then(function (response) {
          return response.text().then(function (html) {
            if (!response.ok) { throw new Error("HTTP " + response.status); }
            box.innerHTML = html;
            if (response.headers.get("X-Stella-Run-Final") === "1") {
              stop("The run has ended.");
              window.location.reload();  // the heading, facts and cancel form change too
            }
          });
        })
        .catch(function (err) {
          stop("Live updates stopped.");
          failed(box, err.name === "AbortError" ? "timed out" : err.message);
        })
        .then(function () { window.clearTimeout(limit); inflight = false; });
    }
    if (pause) {
      pause.addEventListener("change", function () {
        if (note && timer !== null) { note.textContent = pause.checked ? "Paused." : "Live."; }
      });
    }
    if (note) { note.textContent = "Live."; }
    timer = window.setInterval(tick, 2000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-retry]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault(); window.location.reload();
      });
    });
    if (window.location.hash === "#start") { openStart(); }
    var inputs = document.querySelector("[data-json]");
    var note = document.getElementById("inputs-check");
    if (inputs && note) {
      inputs.addEventListener("input", function () {
        try {
          var value = JSON.parse(inputs.value || "{}");
          var ok = value !== null && typeof value === "object" && !Array.isArray(value);
          inputs.setCustomValidity(ok ? "" : "inputs must be a JSON object");
          note.textContent = ok ? "Valid JSON object." : "Inputs must be a JSON object.";
        } catch (err) {
          inputs.setCustomValidity("not valid JSON");
          note.textContent = "Not valid JSON: " + err.message;
        }
      });
    }
    var box = document.querySelector("[data-live-src]");
    if (box) { live(box); }
  });
})();
