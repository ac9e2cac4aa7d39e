// script-monitor dashboard: keep a live log scrolled to its end while the reader is there.
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
