-- Tollgate analytics schema, production form: a sharded, replicated ClickHouse cluster.
-- Same columns, keys and rollups as schema.sql (keep the two in step); here each table is a
-- Replicated*MergeTree "_local" table on every server plus a Distributed table of the same
-- name as in schema.sql, so the analytics service and finance queries run unchanged.
--
-- Before running it:
--   * remote_servers defines the cluster "tollgate_cluster" (rename it everywhere below if
--     yours is called differently), ZooKeeper/Keeper is configured, and every server defines
--     the macros {shard} and {replica}.
--   * Run once, from any node:  clickhouse-client --multiquery < deploy/clickhouse/cluster.sql
--     ON CLUSTER runs every statement on all servers.
--
-- Sharding is by request_id, so every copy of a record lands on the same shard and
-- ReplacingMergeTree can collapse it there; FINAL and GROUP BY request_id stay per shard.
--
-- The analytics consumer checks which request_ids are already stored before it inserts, so it
-- must see its own writes. Give it these settings in its DSN (clickhouse-go passes unknown DSN
-- parameters as settings), e.g. for two replicas per shard:
--   clickhouse://ch:9000/tollgate?insert_distributed_sync=1&insert_quorum=2&select_sequential_consistency=1
-- insert_distributed_sync makes the Distributed insert return only once every shard has the
-- rows; insert_quorum plus select_sequential_consistency make a later read on any replica
-- see them.
--
-- Retention: drop monthly partitions on every server,
--   ALTER TABLE tollgate.requests_local ON CLUSTER tollgate_cluster DROP PARTITION 202511;
--   ALTER TABLE tollgate.request_ids_local ON CLUSTER tollgate_cluster DROP PARTITION 202511;
--   ALTER TABLE tollgate.usage_daily_local ON CLUSTER tollgate_cluster DROP PARTITION 202511;
--
-- Upgrading a cluster that has requests but no request_ids: run this file again before the new
-- analytics version starts (it only adds what is missing). analytics then copies the existing
-- ids into request_ids in the background, newest day first, logging its progress; until a day
-- is copied its existence check reads requests for that day, as before. A version of analytics
-- that finds requests to be a Distributed table without request_ids does not create one (a
-- plain view on the Distributed table would see only the inserts through its own server) and
-- keeps checking requests, logging request_ids_missing.

CREATE DATABASE IF NOT EXISTS tollgate ON CLUSTER tollgate_cluster;

CREATE TABLE IF NOT EXISTS tollgate.requests_local ON CLUSTER tollgate_cluster
(
    ts                      DateTime('UTC'),
    ts_start_ms             Int64,
    ts_end_ms               Int64,
    ttfb_ms                 Int64,
    request_id              String,
    v                       UInt32,
    edge_id                 String,
    seq                     UInt64,
    account_id              String,
    key_id                  String,
    lease_id                String,
    model                   String,
    model_requested         String,
    status                  Int32,
    stream                  UInt8,
    stop_reason             String,
    error_type              String,
    input_tokens            Int64,
    output_tokens           Int64,
    cache_write_5m_tokens   Int64,
    cache_write_1h_tokens   Int64,
    cache_read_tokens       Int64,
    thinking_tokens         Int64,
    web_search_requests     Int64,
    estimated               UInt8,
    cost_microcredits       Int64,
    upstream_cost_microusd  Int64,
    price_version           String,
    upstream_key_id         String,
    upstream_request_id     String,
    inserted_at             DateTime('UTC') DEFAULT now()
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tollgate/requests_local', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (toDate(ts), account_id, request_id);

CREATE TABLE IF NOT EXISTS tollgate.requests ON CLUSTER tollgate_cluster
AS tollgate.requests_local
ENGINE = Distributed(tollgate_cluster, tollgate, requests_local, cityHash64(request_id));

-- The request ids of requests_local, sorted by request_id, for the consumer's existence check
-- (schema.sql explains why). Sharded like requests, by cityHash64(request_id), and filled by a
-- view on each server's requests_local, so every id lives on the shard of its row, written in
-- the same insert, never before it.
CREATE TABLE IF NOT EXISTS tollgate.request_ids_local ON CLUSTER tollgate_cluster
(
    request_id  String,
    ts          DateTime('UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tollgate/request_ids_local', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY request_id;

CREATE TABLE IF NOT EXISTS tollgate.request_ids ON CLUSTER tollgate_cluster
AS tollgate.request_ids_local
ENGINE = Distributed(tollgate_cluster, tollgate, request_ids_local, cityHash64(request_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS tollgate.request_ids_mv ON CLUSTER tollgate_cluster
TO tollgate.request_ids_local AS
SELECT request_id, ts
FROM tollgate.requests_local;

CREATE TABLE IF NOT EXISTS tollgate.usage_daily_local ON CLUSTER tollgate_cluster
(
    day                     Date,
    account_id              String,
    model                   String,
    requests                UInt64,
    error_requests          UInt64,
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
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/tollgate/usage_daily_local', '{replica}')
PARTITION BY toYYYYMM(day)
ORDER BY (day, account_id, model);

-- Reads only; rows reach usage_daily_local through the view below, on the shard that stores
-- the request rows. A view fires on the replica that receives an insert; replication then
-- copies both tables' parts to the other replicas.
CREATE TABLE IF NOT EXISTS tollgate.usage_daily ON CLUSTER tollgate_cluster
AS tollgate.usage_daily_local
ENGINE = Distributed(tollgate_cluster, tollgate, usage_daily_local);

CREATE MATERIALIZED VIEW IF NOT EXISTS tollgate.usage_daily_mv ON CLUSTER tollgate_cluster
TO tollgate.usage_daily_local AS
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
FROM tollgate.requests_local
GROUP BY day, account_id, model;

-- The consumer's Kafka offsets (analytics/internal/store/clickhouse/offsets.go has the
-- single-node form, which analytics creates at start when no table of that name exists: it
-- would be a plain table on whichever server it reached, so create this one first). Every
-- batch saves its next offset per partition here before it commits to Kafka; at start each
-- instance reads max(next_offset) per partition and moves the group back where ClickHouse is
-- behind Kafka (a restore). ReplacingMergeTree with next_offset as the version keeps the
-- highest offset per key. Sharding by the whole sorting key puts every row of one partition's
-- offset on one shard, so merges collapse them there; the Distributed table reads every shard,
-- so every instance, whichever server it reaches, gets the same max(). Replicated like the
-- others: losing a replica must not lose the offsets while the rows survive (analytics would
-- then take the rows for an installation upgraded from before offset tracking).
CREATE TABLE IF NOT EXISTS tollgate.kafka_offsets_local ON CLUSTER tollgate_cluster
(
    consumer_group   String,
    topic            String,
    kafka_partition  UInt32,
    next_offset      UInt64,
    saved_at         DateTime('UTC') DEFAULT now()
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tollgate/kafka_offsets_local', '{replica}', next_offset)
ORDER BY (consumer_group, topic, kafka_partition);

CREATE TABLE IF NOT EXISTS tollgate.kafka_offsets ON CLUSTER tollgate_cluster
AS tollgate.kafka_offsets_local
ENGINE = Distributed(tollgate_cluster, tollgate, kafka_offsets_local, cityHash64(consumer_group, topic, kafka_partition));

-- analytics' record of its one-time copy of the ids that requests held before request_ids
-- existed (analytics/internal/store/clickhouse/requestids.go has the single-node form). Every
-- instance, whichever server it reaches, sees the same progress and the same lease, so one
-- instance copies while the others wait. A few rows per copied day, one per lease heartbeat
-- (every 20 s while a copy runs). analytics creates none of the request_ids tables on a
-- cluster: without them it checks requests, as before, and logs request_ids_missing.
CREATE TABLE IF NOT EXISTS tollgate.request_ids_backfill_local ON CLUSTER tollgate_cluster
(
    event      String,
    day        Date,
    owner      String,
    row_count  UInt64,
    at         DateTime('UTC') DEFAULT now()
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tollgate/request_ids_backfill_local', '{replica}')
ORDER BY (event, day);

CREATE TABLE IF NOT EXISTS tollgate.request_ids_backfill ON CLUSTER tollgate_cluster
AS tollgate.request_ids_backfill_local
ENGINE = Distributed(tollgate_cluster, tollgate, request_ids_backfill_local, cityHash64(event));
