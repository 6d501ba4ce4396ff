// Sorting, filtering and pagination of the full table (no dependencies).
(function () {
  "use strict";
  var table = document.getElementById("full-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var pageSize = parseInt(table.getAttribute("data-page-size"), 10) || 50;
  var page = 0;
  var filters = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var divergedOnly = document.getElementById("filter-diverged");
  var count = document.getElementById("full-count");
  var label = document.getElementById("page-label");
  var prev = document.getElementById("page-prev");
  var next = document.getElementById("page-next");

  function matches(row) {
    for (var i = 0; i < filters.length; i++) {
      var want = filters[i].value;
      if (want && row.getAttribute("data-" + filters[i].getAttribute("data-filter")) !== want) {
        return false;
      }
    }
    return !(divergedOnly && divergedOnly.checked &&
             parseInt(row.getAttribute("data-diverged"), 10) === 0);
  }

  function render() {
    var shown = rows.filter(matches);
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    page = Math.min(page, pages - 1);
    var first = page * pageSize, last = first + pageSize;
    rows.forEach(function (row) { row.hidden = true; });
    shown.forEach(function (row, i) { row.hidden = i < first || i >= last; });
    count.textContent = shown.length + " of " + rows.length + " cells";
    label.textContent = "page " + (page + 1) + " of " + pages;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    document.getElementById("full-pager").hidden = pages === 1;
  }

  function value(row, key, type) {
    var v = row.getAttribute("data-" + key + (type === "text" ? "-name" : ""));
    if (type === "num") { return v === "" ? NaN : parseFloat(v); }
    return v;
  }

  function sortBy(th) {
    var key = th.getAttribute("data-key"), type = th.getAttribute("data-type");
    var asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[data-key]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var sign = asc ? 1 : -1;
    rows.sort(function (a, b) {
      var x = value(a, key, type), y = value(b, key, type);
      if (type === "num") {  // cells without a value go last either way
        if (isNaN(x) && isNaN(y)) { return 0; }
        if (isNaN(x)) { return 1; }
        if (isNaN(y)) { return -1; }
        return sign * (x - y);
      }
      return sign * x.localeCompare(y);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    page = 0;
    render();
  }

  table.querySelectorAll("th[data-key]").forEach(function (th) {
    th.setAttribute("tabindex", "0");
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });
  filters.forEach(function (s) { s.addEventListener("change", function () { page = 0; render(); }); });
  if (divergedOnly) { divergedOnly.addEventListener("change", function () { page = 0; render(); }); }
  prev.addEventListener("click", function () { page -= 1; render(); });
  next.addEventListener("click", function () { page += 1; render(); });
  render();

  function setAll(open) {
    document.querySelectorAll("details.cell").forEach(function (d) { d.open = open; });
  }
  document.getElementById("open-all").addEventListener("click", function () { setAll(true); });
  document.getElementById("close-all").addEventListener("click", function () { setAll(false); });
}());
