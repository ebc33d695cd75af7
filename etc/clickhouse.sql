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
-- between the insert and the reply) is sent again. The table is a ReplacingMergeTree whose
-- sorting key ends in request_id, so such duplicates are merged away, and queries that must
-- be exact (scarfgw insights does) read it with FINAL. The price: several events of one
-- request (telemetry, scarf-js, file bodies with several JSON objects) are kept as one row
-- (the last one); insights counts requests, so its numbers are unaffected.
--
-- `scarfgw insights` with `engine: clickhouse` reads this table (insights.clickhouse:
-- url, database, table). Upgrading a table created by an older version of this file:
--   CREATE TABLE scarfgw_events_new ... (this statement, with the new name);
--   INSERT INTO scarfgw_events_new SELECT * FROM scarfgw_events;  (column for column)
--   RENAME TABLE scarfgw_events TO scarfgw_events_old, scarfgw_events_new TO scarfgw_events;

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
    `origin.type` Nullable(String),
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
    -- file: the `version` variable of the incoming template, when it has one
    `variables.version` Nullable(String),
    -- npm (name) and go (module; `file` above is zip, mod, info, list or latest)
    name Nullable(String),
    module Nullable(String),
    -- pixel
    pixel_id Nullable(String),
    -- 0 when the response body was not fully delivered (absent otherwise)
    complete Nullable(UInt8)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (domain, kind, time, request_id);
