"""The live dashboard: frames from the exporter's windows, pushed to a page
drawn with a vendored charting library (``static/``)."""
