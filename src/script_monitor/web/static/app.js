// script-monitor dashboard: keep a live log scrolled to its end while the reader is there.
(function () {
  "use strict";
  var stick = true;
  function logBox() { return document.getElementById("log"); }
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
