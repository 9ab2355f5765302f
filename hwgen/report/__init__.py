"""Reports: report.json (keys others rely on) and, later, report.html."""
