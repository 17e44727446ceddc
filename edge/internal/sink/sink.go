// Package sink is where the edge puts usage records on their way to Kafka (topic usage.v1,
// key = account id). The request path sees only Sink; the edge implements it with sink/wal,
// an on-disk write-ahead log with group commit.
//
// The contract that keeps every served request billed: a request reserves room for its
// record before it is forwarded, and is refused (503) when there is none. A reservation is
// then either used by exactly one Append or given back with Release, so Append never has
// to drop a record or block.
package sink

import "tollgate/pkg/usage"

// Sink takes usage records. Implementations are safe for concurrent use.
type Sink interface {
	// Reserve claims room for one record. False means the sink is full: refuse the request.
	Reserve() bool
	// Append hands over the record of a request that holds a reservation, using it up. It
	// never drops, and may set rec.Seq; rec is not retained. When it returns the record is
	// as durable as the implementation makes it (sink/wal: written, so it survives the
	// process; with -wal-sync=always also fsynced, after one group commit), and the caller
	// completes the response only after that.
	Append(rec *usage.Record)
	// Release gives back a reservation that no record will use.
	Release()
}
