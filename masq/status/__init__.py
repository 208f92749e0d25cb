"""The status model and its views: JSON document, terminal text, web page."""
