// script-monitor dashboard: a live log kept scrolled to its end, the Run now message
// and the overview's filter box.
(function () {
  "use strict";
  var stick = true;
  function logBox() { return document.getElementById("log"); }
  // Every request htmx makes carries the session's CSRF token (the pages are cached
  // without it; the token is in the page's last form).
  document.addEventListener("htmx:configRequest", function (e) {
    var field = document.querySelector("#run-form input[name=csrf]");
    if (field) { e.detail.headers["X-CSRF-Token"] = field.value; }
  });
  // Run now: say so at once; the answer then takes the page to the new run.
  document.addEventListener("htmx:beforeRequest", function (e) {
    var button = e.detail.elt;
    var flash = document.getElementById("flash");
    if (!button || !button.matches || !button.matches("button.run") || !flash) { return; }
    var p = document.createElement("p");
    p.className = "flash";
    p.setAttribute("role", "status");
    p.textContent = "Starting " + (button.dataset.kind || "") + " " + (button.dataset.name || "") + "…";
    flash.replaceChildren(p);
  });
  // A list's filter box (data-filter: the selector of its rows) narrows it as one types;
  // without JavaScript its form asks the server instead.
  document.addEventListener("input", function (e) {
    var box = e.target;
    if (!box.matches || !box.matches("input[data-filter]")) { return; }
    var needle = box.value.trim().toLowerCase();
    document.querySelectorAll(box.dataset.filter).forEach(function (row) {
      row.hidden = needle !== "" && row.textContent.toLowerCase().indexOf(needle) < 0;
    });
  });
  document.addEventListener("htmx:sseBeforeMessage", function () {
    var box = logBox();
    if (box) { stick = box.scrollHeight - box.scrollTop - box.clientHeight < 40; }
  });
  document.addEventListener("htmx:sseMessage", function () {
    var box = logBox();
    if (box && stick) { box.scrollTop = box.scrollHeight; }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var box = logBox();
    if (box) { box.scrollTop = box.scrollHeight; }
  });
})();
