"""The web console: server-rendered pages at /console/ over the API's own routes."""
