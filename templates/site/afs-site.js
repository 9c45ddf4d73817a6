/* afs site: draws the charts and filters the question tables on every page load.
 *
 * Material's instant navigation swaps the page content without reloading, so nothing here
 * runs once at start-up only: Material's document$ emits each page load (and the first one),
 * and without Material (or with instant navigation off) the first load is caught directly.
 * Chart data is JSON in each canvas's data-afs-chart attribute (a <script> holding data would be
 * run as JavaScript by instant navigation); charts whose canvas has left the page are destroyed
 * so instant navigation does not leak them.
 */
(function () {
  "use strict";
  var charts = [];

  function label(context) {
    var raw = context.raw || {};
    var value = context.formattedValue;
    if (raw && typeof raw === "object" && raw.label) {
      return raw.label + ": (" + raw.x + ", " + raw.y + ")";
    }
    return (context.dataset.label || "") + ": " + value;
  }

  function drawCharts(root) {
    charts = charts.filter(function (chart) {
      if (chart.canvas && document.body.contains(chart.canvas)) return true;
      chart.destroy();
      return false;
    });
    if (typeof Chart === "undefined") return;
    root.querySelectorAll("canvas[data-afs-chart]").forEach(function (canvas) {
      if (Chart.getChart(canvas)) return;
      var config = JSON.parse(canvas.getAttribute("data-afs-chart"));
      config.options = config.options || {};
      config.options.plugins = config.options.plugins || {};
      config.options.plugins.tooltip = { callbacks: { label: label } };
      try {
        charts.push(new Chart(canvas, config));
      } catch (error) {  // one bad chart must not keep the others from drawing
        console.error("afs: chart " + canvas.id + " failed: " + error);
      }
    });
  }

  function setupQuestions(root) {
    root.querySelectorAll("[data-afs-questions]").forEach(function (box) {
      if (box.getAttribute("data-afs-ready")) return;
      box.setAttribute("data-afs-ready", "1");
      var search = box.querySelector("[data-afs-search]");
      var failed = box.querySelector("[data-afs-failed]");
      var count = box.querySelector("[data-afs-count]");
      var rows = Array.prototype.slice.call(box.querySelectorAll("tr[data-afs-row]"));
      function apply() {
        var words = (search.value || "").toLowerCase().split(/\s+/).filter(Boolean);
        var shown = 0;
        rows.forEach(function (row) {
          var text = row.textContent.toLowerCase();
          var ok = (!failed.checked || row.getAttribute("data-failed") === "true") &&
            words.every(function (w) { return text.indexOf(w) !== -1; });
          row.hidden = !ok;
          if (ok) shown += 1;
        });
        count.textContent = shown + " of " + rows.length;
      }
      search.addEventListener("input", apply);
      failed.addEventListener("change", apply);
      apply();
    });
  }

  function pageLoaded() {
    drawCharts(document);
    setupQuestions(document);
  }

  if (typeof document$ !== "undefined" && document$ && document$.subscribe) {
    document$.subscribe(pageLoaded);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", pageLoaded);
  } else {
    pageLoaded();
  }
})();
