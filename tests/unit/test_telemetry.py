"""Host classes (the bounded label), the JSON log lines and the settings that steer them."""

from __future__ import annotations

import json
import logging
import re

import pytest
from pydantic import ValidationError

from pixelbatch.settings import Settings
from pixelbatch.telemetry import logs
from pixelbatch.telemetry.hosts import host_class, parse_classes


def test_host_classes_are_bounded_by_configuration() -> None:
    classes = parse_classes(["example.com=example", "cdn.example.com=example-cdn", "Shop.IO.=shop"])
    assert host_class("https://img.cdn.example.com/a.jpg", classes) == "example-cdn"
    assert host_class("https://www.example.com/a.jpg", classes) == "example"
    assert host_class("https://example.com/a.jpg", classes) == "example"
    assert host_class("http://SHOP.io:8080/x", classes) == "shop"
    assert host_class("https://notexample.com/a.jpg", classes) == "other"
    assert host_class("http://192.168.1.4/a.jpg", classes) == "ip"
    assert host_class("http://[::1]:8080/a.jpg", classes) == "ip"
    assert host_class("not a url", classes) == "other"


def test_a_bad_host_class_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match=re.escape("'cdn.example.com'")):
        Settings(metrics_host_classes="ok.com=ok,cdn.example.com")
    settings = Settings(metrics_host_classes="a.com=a, b.com=b")
    assert settings.host_classes == {"a.com": "a", "b.com": "b"}


def test_json_lines_carry_the_event_fields() -> None:
    record = logging.LogRecord("pixelbatch.jobs", logging.INFO, "f", 1, "image %s", ("7",), None)
    record.event = {"event": "image_finished", "image_id": 7, "outcome": "done", "bytes_in": 10}
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "image 7"
    assert line["level"] == "INFO" and line["logger"] == "pixelbatch.jobs"
    assert (line["event"], line["image_id"], line["outcome"], line["bytes_in"]) == (
        "image_finished",
        7,
        "done",
        10,
    )
    assert line["time"].endswith("+00:00")


def test_an_event_built_on_demand_is_built_by_json_lines_only() -> None:
    built: list[str] = []

    def event() -> dict[str, object]:
        built.append("built")
        return {"event": "image_finished", "image_id": 7}

    record = logging.LogRecord("pixelbatch.jobs", logging.INFO, "f", 1, "image %s", ("7",), None)
    record.event = event
    assert logging.Formatter(logs.TEXT_FORMAT).format(record).endswith("image 7")
    assert built == []
    line = json.loads(logs.JsonFormatter().format(record))
    assert (line["event"], line["image_id"], built) == ("image_finished", 7, ["built"])


def test_per_request_lines_are_debug_only() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure(logging.INFO, "json")
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        logs.configure(logging.DEBUG, "text")
        assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(logging.NOTSET)
