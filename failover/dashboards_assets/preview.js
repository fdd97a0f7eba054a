// Draws a `bfm dashboards preview` page from the JSON in <script id="bfm-data">: one
// element per panel on Grafana's 24-column grid, timeseries with uPlot, the rest as HTML.
// When every panel is drawn, document.body.dataset.rendered holds how many were.
(function () {
  "use strict";
  var ROW_PX = 30;
  var page = JSON.parse(document.getElementById("bfm-data").textContent);

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function note(body, className, text) {
    body.appendChild(el("div", className, text));
  }

  function axisValue(unit, value) {
    if (value === null || value === undefined) return "";
    if (unit === "percentunit") return Math.round(value * 1000) / 10 + "%";
    if (unit === "bytes") {
      var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0, size = Math.abs(value);
      while (size >= 1024 && i < units.length - 1) { size /= 1024; i++; }
      return (value < 0 ? "-" : "") + Math.round(size * 10) / 10 + " " + units[i];
    }
    var text = Math.abs(value) >= 1000 ? value.toExponential(1) : String(Math.round(value * 1000) / 1000);
    return unit === "s" ? text + " s" : text;
  }

  function zeroRange(u, min, max) {
    var low = Math.min(0, min === null ? 0 : min), high = Math.max(0, max === null ? 1 : max);
    return [low, high > low ? high + (high - low) * 0.05 : low + 1];
  }

  function pad(number) { return (number < 10 ? "0" : "") + number; }

  // Axis times in UTC, as the page header gives the range.
  function timeLabel(t) {
    var d = new Date(t * 1000), span = page.range.end_s - page.range.start_s;
    var clock = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (span <= 3 * 3600) clock += ":" + pad(d.getUTCSeconds());
    return span > 2 * 86400 ? pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + clock : clock;
  }

  function drawTimeseries(view, body, size) {
    if (!view.xs.length) return;
    var legend = el("div", "legend");
    view.series.forEach(function (line) {
      var entry = el("div", "legend-entry");
      var swatch = el("span", "swatch");
      swatch.style.background = line.color;
      entry.appendChild(swatch);
      entry.appendChild(el("span", "legend-name", line.name));
      entry.appendChild(el("span", "legend-calc", "last " + line.last + "  max " + line.max));
      legend.appendChild(entry);
    });
    var plotBox = el("div", "plot");
    body.appendChild(plotBox);
    body.appendChild(legend);
    var legendPx = Math.min(legend.childNodes.length, 4) * 16 + 6;
    var series = [{}];
    view.series.forEach(function (line) {
      var spec = {
        label: line.name,
        stroke: line.color,
        width: 1.5,
        points: { show: view.xs.length < 3 },
        spanGaps: false,
      };
      if (view.fillOpacity > 0 || view.stacked) spec.fill = line.color + "40";
      if (view.bars && uPlot.paths && uPlot.paths.bars) {
        spec.paths = uPlot.paths.bars({ size: [0.6, 64] });
        spec.fill = line.color + "b0";
      }
      series.push(spec);
    });
    var data = [view.xs].concat(view.series.map(function (line) { return line.values; }));
    var marks = page.annotations;
    // Filled, stacked and bar series are read from 0, as Grafana draws them.
    var fromZero = view.stacked || view.bars || view.fillOpacity > 0;
    var options = {
      width: Math.max(size.width, 120),
      height: Math.max(size.height - legendPx, 60),
      legend: { show: false },
      cursor: { show: false },
      scales: {
        x: { time: true, range: [page.range.start_s, page.range.end_s] },
        y: { range: fromZero ? zeroRange : undefined },
      },
      axes: [
        {
          stroke: "#9fa7b3",
          grid: { stroke: "#2c3038" },
          ticks: { stroke: "#2c3038" },
          space: 90,
          values: function (u, splits) { return splits.map(timeLabel); },
        },
        {
          stroke: "#9fa7b3",
          grid: { stroke: "#2c3038" },
          ticks: { stroke: "#2c3038" },
          size: 60,
          values: function (u, splits) {
            return splits.map(function (v) { return axisValue(view.unit, v); });
          },
        },
      ],
      series: series,
      hooks: {
        draw: [
          function (u) {
            var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
            ctx.save();
            marks.forEach(function (mark) {
              mark.regions.forEach(function (region) {
                var x0 = u.valToPos(region[0], "x", true), x1 = u.valToPos(region[1], "x", true);
                ctx.fillStyle = mark.color;
                ctx.globalAlpha = 0.18;
                ctx.fillRect(x0, top, Math.max(x1 - x0, 1), height);
                ctx.globalAlpha = 0.9;
                ctx.fillRect(x0, top, 2, height);
              });
            });
            ctx.globalAlpha = 1;
            view.thresholdLines.forEach(function (line) {
              var y = u.valToPos(line.value, "y", true);
              if (y < top || y > top + height) return;
              ctx.strokeStyle = line.color || "#ccc";
              ctx.setLineDash([6, 4]);
              ctx.beginPath();
              ctx.moveTo(u.bbox.left, y);
              ctx.lineTo(u.bbox.left + u.bbox.width, y);
              ctx.stroke();
            });
            ctx.setLineDash([]);
            ctx.fillStyle = "#ffffff";
            view.exemplars.forEach(function (exemplar) {
              var x = u.valToPos(exemplar[0], "x", true), y = u.valToPos(exemplar[1], "y", true);
              ctx.fillRect(x - 2.5, y - 2.5, 5, 5);
            });
            ctx.restore();
          },
        ],
      },
    };
    new uPlot(options, data, plotBox);
  }

  function drawStat(view, body) {
    if (!view.items.length) {
      if (!view.errors.length) note(body, "stat-none", view.noValue);
      return;
    }
    var box = el("div", "stat-items");
    view.items.forEach(function (item) {
      var tile = el("div", "stat-item");
      if (item.color) tile.style.background = item.color;
      var mode = view.textMode;
      if (mode === "auto") mode = view.items.length > 1 ? "value_and_name" : "value";
      if (mode === "name") tile.appendChild(el("div", "stat-value", item.name));
      if (mode === "value_and_name") tile.appendChild(el("div", "stat-name", item.name));
      if (mode !== "name") tile.appendChild(el("div", "stat-value", item.text));
      tile.dataset.name = item.name;
      tile.dataset.value = item.text;
      box.appendChild(tile);
    });
    body.appendChild(box);
  }

  function drawState(view, body) {
    var span = page.range.end_s - page.range.start_s || 1;
    view.rows.forEach(function (row) {
      var line = el("div", "state-row");
      line.appendChild(el("div", "state-name", row.name));
      var track = el("div", "state-track");
      row.bands.forEach(function (band) {
        var from = Math.max(band.from, page.range.start_s), to = Math.min(band.to, page.range.end_s);
        if (to <= from) return;
        var piece = el("div", "state-band", band.text);
        piece.style.left = ((from - page.range.start_s) / span) * 100 + "%";
        piece.style.width = ((to - from) / span) * 100 + "%";
        piece.style.background = band.color;
        piece.title = band.text;
        track.appendChild(piece);
      });
      line.appendChild(track);
      body.appendChild(line);
    });
  }

  function drawTable(view, body) {
    if (!view.rows.length) return;
    var table = el("table", "data-table");
    var head = el("tr");
    view.columns.forEach(function (name) { head.appendChild(el("th", "", name)); });
    table.appendChild(head);
    view.rows.forEach(function (row) {
      var tr = el("tr");
      row.forEach(function (cell) {
        var td = el("td", "", cell.text);
        if (cell.color) {
          td.style.background = cell.color;
          td.style.color = "#fff";
        }
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    body.appendChild(table);
  }

  function drawBars(view, body) {
    view.items.forEach(function (item) {
      var line = el("div", "bar-row");
      line.appendChild(el("div", "bar-name", item.name));
      var track = el("div", "bar-track");
      var fill = el("div", "bar-fill");
      fill.style.width = item.fraction * 100 + "%";
      fill.style.background = item.color || "#5794F2";
      track.appendChild(fill);
      line.appendChild(track);
      line.appendChild(el("div", "bar-value", item.text));
      body.appendChild(line);
    });
  }

  function drawLogs(view, body) {
    if (!view.lines.length) return;
    var list = el("div", "log-lines");
    view.lines.forEach(function (entry) {
      var row = el("div", "log-line");
      row.appendChild(el("span", "log-time", entry.time));
      row.appendChild(el("span", "log-labels", entry.labels));
      row.appendChild(el("span", "log-text", entry.line));
      list.appendChild(row);
    });
    if (view.total > view.lines.length) {
      list.appendChild(el("div", "log-more", "(" + view.lines.length + " newest of " + view.total + " lines)"));
    }
    body.appendChild(list);
  }

  function drawTrace(view, body) {
    if (!view.spans.length) return;
    note(body, "trace-summary", view.summary);
    var table = el("table", "data-table");
    view.spans.forEach(function (span) {
      var tr = el("tr");
      [span.service, span.name, "+" + span.offset_ms + " ms", span.duration_ms + " ms"].forEach(
        function (text) { tr.appendChild(el("td", "", text)); }
      );
      table.appendChild(tr);
    });
    body.appendChild(table);
  }

  var DRAW = {
    timeseries: drawTimeseries,
    stat: drawStat,
    state: drawState,
    table: drawTable,
    bars: drawBars,
    logs: drawLogs,
    trace: drawTrace,
  };

  function drawPanel(view, grid) {
    var box = el("section", view.kind === "row" ? "panel row" : "panel");
    box.style.gridColumn = view.grid.x + 1 + " / span " + Math.max(view.grid.w, 1);
    box.style.gridRow = view.grid.y + 1 + " / span " + Math.max(view.grid.h, 1);
    box.dataset.title = view.title;
    box.dataset.type = view.type;
    grid.appendChild(box);
    box.appendChild(el("h2", "panel-title", view.title));
    if (view.kind === "row") {
      box.dataset.state = "drawn";
      return true;
    }
    var body = el("div", "panel-body");
    box.appendChild(body);
    view.errors.forEach(function (text) { note(body, "panel-error", text); });
    view.skipped.forEach(function (text) { note(body, "panel-skipped", "not run: " + text); });
    try {
      var size = { width: box.clientWidth - 16, height: view.grid.h * ROW_PX - 34 };
      if (view.kind === "text") note(body, "panel-text", view.text);
      else if (DRAW[view.kind]) DRAW[view.kind](view, body, size);
      else note(body, "panel-skipped", "the preview does not draw " + view.type + " panels");
      // A stat without values already shows its noValue text; "no data" only when other.
      var saidSo = view.kind === "text" || (view.kind === "stat" && view.noValue === "no data");
      if (!view.hasData && !view.errors.length && !view.skipped.length && !saidSo) {
        note(body, "panel-nodata", "no data");
      }
      box.dataset.state = view.errors.length ? "error" : view.hasData ? "data" : "no-data";
      return true;
    } catch (err) {
      note(body, "panel-error", "could not draw this panel: " + err);
      box.dataset.state = "failed";
      return false;
    }
  }

  function header() {
    var top = el("header", "page-header");
    top.appendChild(el("h1", "", page.title));
    top.appendChild(el("div", "range", page.range.text));
    var chosen = el("div", "selections");
    page.selections.forEach(function (pair) {
      chosen.appendChild(el("span", "selection", pair[0] + " = " + pair[1]));
    });
    top.appendChild(chosen);
    var marks = el("div", "annotations");
    page.annotations.forEach(function (mark) {
      var item = el("span", "annotation", mark.name + " (" + mark.regions.length + ")");
      item.style.borderColor = mark.color;
      if (mark.error) {
        item.className += " panel-error";
        item.textContent = mark.name + ": " + mark.error;
      }
      marks.appendChild(item);
    });
    top.appendChild(marks);
    top.appendChild(el("div", "generated", page.generated));
    document.body.appendChild(top);
  }

  header();
  var grid = el("main", "grid");
  document.body.appendChild(grid);
  var drawn = 0;
  page.panels.forEach(function (view) { if (drawPanel(view, grid)) drawn += 1; });
  document.body.dataset.panels = String(page.panels.length);
  document.body.dataset.rendered = String(drawn);
})();
