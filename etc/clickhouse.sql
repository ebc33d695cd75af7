-- scarfgw analytics events in ClickHouse, fed by the `http` sink (one JSON object per line).
--
-- Sink configuration (etc/scarfgw.yaml), one line for the URL:
--
--   events:
--     sinks:
--       - type: http
--         url: "http://127.0.0.1:8123/?query=INSERT%20INTO%20scarfgw_events%20FORMAT%20JSONEachRow&input_format_import_nested_json=1&input_format_skip_unknown_fields=1&date_time_input_format=best_effort"
--         headers: {X-ClickHouse-User: scarfgw, X-ClickHouse-Key: "..."}
--         gzip: true
--
-- The three settings in the URL are required (tested with ClickHouse 18.16, Debian bookworm):
--   input_format_import_nested_json  maps the objects `origin` and `client` onto the dotted
--                                    columns `origin.network`, `client.runtime`, ...
--   input_format_skip_unknown_fields  skips keys without a column: the free-form JSON values
--                                    `variables`, `body_variables` (file rules) and `event`
--                                    (telemetry, scarf-js), which ClickHouse 18.16 cannot
--                                    store in a String column from JSONEachRow
--   date_time_input_format=best_effort  parses `time` ("2026-11-22T10:00:00.123Z"; the
--                                    milliseconds are dropped by DateTime)
-- On ClickHouse 22.3 or later those free-form values can be kept too: add String columns
-- `variables`, `body_variables` and `event` and the URL setting
-- `input_format_json_read_objects_as_strings=1`.
--
-- Delivery is at least once: a batch whose answer was lost (ClickHouse or scarfgw killed
-- between the insert and the reply) is sent again, so a crash can duplicate one batch. Kinds
-- with one event per request (docker, python, pixel, file without body objects) show it as
-- `count() - uniqExact(request_id) > 0`; telemetry and scarf-js requests may legitimately
-- carry several events under one request_id.

CREATE TABLE IF NOT EXISTS scarfgw_events
(
    -- common keys (every event)
    time DateTime,
    request_id String,
    domain String,
    method String,
    path String,
    status UInt16,
    user_agent Nullable(String),
    referer Nullable(String),
    `origin.network` Nullable(String),
    `origin.country` Nullable(String),
    `origin.org` Nullable(String),
    `client.runtime` Nullable(String),
    `client.version` Nullable(String),
    kind String,
    package Nullable(String),
    -- docker
    image Nullable(String),
    reference Nullable(String),
    backend Nullable(String),
    auto_create_rule Nullable(String),
    object Nullable(String),
    pull Nullable(UInt8),
    -- file, catchall, python
    target Nullable(String),
    -- python
    version Nullable(String),
    file Nullable(String),
    -- pixel
    pixel_id Nullable(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (domain, kind, time);
