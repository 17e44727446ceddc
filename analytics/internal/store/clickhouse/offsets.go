package clickhouse

import (
	"context"
	"fmt"
	"math"
	"sort"
)

// offsetsSchema creates the table of the consumer's Kafka offsets, one row per saved batch and
// partition. ApplySchema runs it after deploy/clickhouse/schema.sql, so an operator who applied
// that file by hand still gets it at the service's first start.
//
// ReplacingMergeTree with next_offset as the version keeps the highest offset per (group,
// topic, partition) when parts merge; Offsets reads max(next_offset), which is the same
// answer before any merge, so the offsets only ever move forward and a stale writer (a
// rebalance) cannot move them back. 18.16 requires an unsigned (or date) version column,
// hence UInt64; Kafka offsets of stored messages are never negative.
const offsetsSchema = `CREATE TABLE IF NOT EXISTS tollgate.kafka_offsets
(
    consumer_group   String,
    topic            String,
    kafka_partition  UInt32,
    next_offset      UInt64,
    saved_at         DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (consumer_group, topic, kafka_partition)`

// SaveOffsets implements store.Sink: one row per partition, inserted after the batch's rows.
// ClickHouse 18.16 has no transactions, so rows and offsets cannot commit together; in this
// order a crash between the two leaves the offsets behind the rows, which only means those
// messages are read again and found already stored.
func (s *Store) SaveOffsets(ctx context.Context, group, topic string, next map[int]int64) error {
	if len(next) == 0 {
		return nil
	}
	parts := make([]int, 0, len(next))
	for p := range next {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+".kafka_offsets (consumer_group, topic, kafka_partition, next_offset)")
	if err != nil {
		return fmt.Errorf("prepare offsets insert: %w", err)
	}
	defer batch.Close()
	for _, p := range parts {
		o := next[p]
		if p < 0 || p > math.MaxUint32 || o < 0 {
			return fmt.Errorf("save offsets: partition %d offset %d out of range", p, o)
		}
		if err := batch.Append(group, topic, uint32(p), uint64(o)); err != nil {
			return fmt.Errorf("append offset of %s/%d: %w", topic, p, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert offsets of %s: %w", topic, err)
	}
	return nil
}

// Offsets returns, by partition, the next offset of group on topic whose messages are all
// stored, as SaveOffsets recorded it; partitions never saved are left out.
func (s *Store) Offsets(ctx context.Context, group, topic string) (map[int]int64, error) {
	rows, err := s.conn.Query(ctx, "SELECT kafka_partition, max(next_offset) FROM "+s.db+".kafka_offsets"+
		" WHERE consumer_group = ? AND topic = ? GROUP BY kafka_partition", group, topic)
	if err != nil {
		return nil, fmt.Errorf("query stored offsets: %w", err)
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var p uint32
		var o uint64
		if err := rows.Scan(&p, &o); err != nil {
			return nil, fmt.Errorf("scan stored offset: %w", err)
		}
		if o > math.MaxInt64 {
			return nil, fmt.Errorf("stored offset %d of %s/%d overflows int64", o, topic, p)
		}
		out[int(p)] = int64(o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stored offsets: %w", err)
	}
	return out, nil
}

// HasRequests reports whether the requests table holds at least one row. Analytics asks it
// when kafka_offsets has nothing for its group: rows without offsets are an installation that
// ran a version before offset tracking, no rows a new or replaced ClickHouse. LIMIT 1 keeps it
// cheap on a table of any size (and on a cluster's Distributed table).
func (s *Store) HasRequests(ctx context.Context) (bool, error) {
	rows, err := s.conn.Query(ctx, "SELECT 1 FROM "+s.db+".requests LIMIT 1")
	if err != nil {
		return false, fmt.Errorf("query whether requests has rows: %w", err)
	}
	defer rows.Close()
	found := rows.Next()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("read whether requests has rows: %w", err)
	}
	return found, nil
}
