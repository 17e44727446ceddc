-- Tollgate analytics schema, single node (development, tests, small deployments).
-- The production form (replicated, sharded) is cluster.sql; keep the two in step.
--
-- Runs on ClickHouse 18.16 (Debian's package) and on current releases, so it uses only what
-- both have: no TTL, no DateTime64 (DateTime plus millisecond columns), no codecs, no skip
-- indexes, no LowCardinality, new-style engine clauses. Money is Int64: cost in micro-credits,
-- upstream cost in micro-USD. Every statement is idempotent (IF NOT EXISTS); the analytics
-- service applies this file at start. By hand:
--     clickhouse-client --multiquery < deploy/clickhouse/schema.sql
-- The analytics service rewrites the database name "tollgate" when it is told to use another.
--
-- Retention: by monthly partition, e.g. to drop November 2025:
--     ALTER TABLE tollgate.requests DROP PARTITION 202511;
--     ALTER TABLE tollgate.request_ids DROP PARTITION 202511;  -- with requests, never before it
--     ALTER TABLE tollgate.usage_daily DROP PARTITION 202511;  -- or keep the small rollups longer
-- Partitions present: SELECT DISTINCT partition FROM system.parts WHERE database = 'tollgate' AND active;

CREATE DATABASE IF NOT EXISTS tollgate;

-- One row per usage record (pkg/usage.Record, topic usage.v1), every field of it.
--
-- ReplacingMergeTree collapses rows with equal sorting keys during merges, and the sorting key
-- ends with request_id, so a record inserted twice (same request_id, same ts and account, as a
-- redelivered record is byte-identical) becomes one row. Merges happen eventually, so queries
-- that must not double count use FINAL or GROUP BY request_id; the analytics consumer also
-- refuses to insert a request_id that is already stored (it asks request_ids below), which
-- keeps the rollups exact.
CREATE TABLE IF NOT EXISTS tollgate.requests
(
    ts                      DateTime('UTC'),  -- ts_end_ms truncated to the second; partitions
    ts_start_ms             Int64,            -- Unix milliseconds, as in the record
    ts_end_ms               Int64,
    ttfb_ms                 Int64,
    request_id              String,           -- UUIDv7 from the edge; the idempotency key
    v                       UInt32,           -- record schema version
    edge_id                 String,
    seq                     UInt64,           -- the edge's WAL sequence number
    account_id              String,
    key_id                  String,
    lease_id                String,
    model                   String,           -- as returned by the upstream
    model_requested         String,           -- as the client asked (alias)
    status                  Int32,            -- HTTP status sent to the client
    stream                  UInt8,            -- 0/1
    stop_reason             String,
    error_type              String,
    input_tokens            Int64,
    output_tokens           Int64,            -- includes thinking_tokens, as Anthropic reports
    cache_write_5m_tokens   Int64,
    cache_write_1h_tokens   Int64,
    cache_read_tokens       Int64,
    thinking_tokens         Int64,
    web_search_requests     Int64,
    estimated               UInt8,            -- 1: usage not fully reported by the upstream
    cost_microcredits       Int64,            -- what the customer was charged
    upstream_cost_microusd  Int64,            -- what the operator pays the upstream
    price_version           String,
    upstream_key_id         String,
    upstream_request_id     String,
    inserted_at             DateTime('UTC') DEFAULT now()  -- when analytics stored the row
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (toDate(ts), account_id, request_id);

-- Daily totals per account and model. SummingMergeTree adds up rows with equal keys during
-- merges; read it with sum() ... GROUP BY, since merges are eventual.
CREATE TABLE IF NOT EXISTS tollgate.usage_daily
(
    day                     Date,
    account_id              String,
    model                   String,
    requests                UInt64,
    error_requests          UInt64,           -- status >= 400
    estimated_requests      UInt64,
    input_tokens            Int64,
    output_tokens           Int64,
    cache_write_5m_tokens   Int64,
    cache_write_1h_tokens   Int64,
    cache_read_tokens       Int64,
    thinking_tokens         Int64,
    web_search_requests     Int64,
    cost_microcredits       Int64,
    upstream_cost_microusd  Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, account_id, model);

-- A materialized view sees every block inserted into requests, duplicates included: it is
-- exact only because the consumer never inserts a request_id twice. If it ever drifts (see
-- analytics/README.md), rebuild a month from the deduplicated base table:
--     ALTER TABLE tollgate.usage_daily DROP PARTITION 202511;
--     INSERT INTO tollgate.usage_daily (day, account_id, model, requests, ...)
--         SELECT ... FROM tollgate.requests FINAL WHERE toYYYYMM(ts) = 202511 GROUP BY ...;
CREATE MATERIALIZED VIEW IF NOT EXISTS tollgate.usage_daily_mv TO tollgate.usage_daily AS
SELECT
    toDate(ts)                   AS day,
    account_id,
    model,
    count()                      AS requests,
    countIf(status >= 400)       AS error_requests,
    countIf(estimated = 1)       AS estimated_requests,
    sum(input_tokens)            AS input_tokens,
    sum(output_tokens)           AS output_tokens,
    sum(cache_write_5m_tokens)   AS cache_write_5m_tokens,
    sum(cache_write_1h_tokens)   AS cache_write_1h_tokens,
    sum(cache_read_tokens)       AS cache_read_tokens,
    sum(thinking_tokens)         AS thinking_tokens,
    sum(web_search_requests)     AS web_search_requests,
    sum(cost_microcredits)       AS cost_microcredits,
    sum(upstream_cost_microusd)  AS upstream_cost_microusd
FROM tollgate.requests
GROUP BY day, account_id, model;

-- The request ids of requests, sorted by request_id, for the consumer's existence check ("which
-- ids of this batch are stored already?"). requests is sorted by day and account first, so
-- there the check reads every granule that holds an account boundary of the batch's day: up
-- to the whole day once merges have built one part for it. Edge request ids are UUIDv7, which
-- sort by time, so a batch's ids sit together here and the primary key reads only the
-- granules around them, however many rows the day has (analytics/README.md has the figures).
--
-- Filled only by request_ids_mv, inside the same INSERT as the rows of requests: ClickHouse
-- writes the base table first and then its views in name order (request_ids_mv before
-- usage_daily_mv; checked on 18.16), so an id is never here without its row. An insert that
-- fails half-way leaves either rows without their ids (the retry inserts them again: FINAL
-- collapses the copies, and usage_daily, written last, had not counted them) or rows and ids
-- without their rollup (rebuild the month: analytics/README.md) — never a rollup counted twice.
-- ReplacingMergeTree collapses repeated ids (a backfill that ran twice) as parts merge; the
-- check only asks whether an id is present, so repeats never change its answer.
--
-- Installations that had requests before this table existed get their old ids copied in by the
-- analytics service at start (in the background; request_ids_backfill records its progress),
-- and until a day is copied the check reads requests for that day.
CREATE TABLE IF NOT EXISTS tollgate.request_ids
(
    request_id  String,
    ts          DateTime('UTC')   -- the row's ts: monthly partitions and the check's time range
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY request_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS tollgate.request_ids_mv TO tollgate.request_ids AS
SELECT request_id, ts
FROM tollgate.requests;
