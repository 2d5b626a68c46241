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
    if (document.body.dataset.live === "1") {
      // Refresh a live run every 2 s unless the operator is filling in a form.
      window.setInterval(function () {
        var busy = typing(document.activeElement) ||
          Array.prototype.some.call(document.querySelectorAll("textarea"), function (t) {
            return t.value.trim() !== "";
          });
        if (!busy) { window.location.reload(); }
      }, 2000);
    }
  });
})();
