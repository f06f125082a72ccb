// steer feature dashboard, index page: filter rows as you type, sort by clicking a header.
// Rows are rendered by Python (escaped); this script only hides and reorders them.
(function () {
  "use strict";
  var table = document.getElementById("features");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");

  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var count = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute("data-search");
      var ok = words.every(function (w) { return text.indexOf(w) !== -1; });
      row.hidden = !ok;
      if (ok) { count += 1; }
    });
    shown.textContent = String(count);
  }

  function sortBy(th) {
    var key = th.getAttribute("data-key");
    var numeric = th.getAttribute("data-type") === "num";
    var desc = !th.classList.contains("sorted-desc");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) {
      c.classList.remove("sorted-asc", "sorted-desc");
    });
    th.classList.add(desc ? "sorted-desc" : "sorted-asc");
    rows.sort(function (a, b) {
      var x = a.getAttribute("data-" + key);
      var y = b.getAttribute("data-" + key);
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return desc ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  filter.addEventListener("input", applyFilter);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    if (th.hasAttribute("data-key")) {
      th.addEventListener("click", function () { sortBy(th); });
    }
  });
  var params = new URLSearchParams(window.location.search);
  if (params.get("q")) { filter.value = params.get("q"); }
  applyFilter();
})();
