"""The web page: server-rendered templates and a little vanilla JS, a client of the JSON API."""
