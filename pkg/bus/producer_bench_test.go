package bus_test

import (
	"context"
	"fmt"
	"testing"

	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
)

// BenchmarkProducerSend is the edge's shipper's call: 64 records of ~750 bytes, keyed by 100
// accounts, to a topic of 8 partitions on the in-process broker, acks=all. The broker's own
// work is in the time too; allocations are the producer's and the broker's.
func BenchmarkProducerSend(b *testing.B) {
	brokers := bustest.Start(b, 8, "bench.v1")
	value := make([]byte, 750)
	msgs := make([]bus.Message, 64)
	for i := range msgs {
		msgs[i] = bus.Message{Key: fmt.Appendf(nil, "acct_%02d", i%100), Value: value}
	}
	for _, size := range []int{1000, 64} {
		b.Run(fmt.Sprintf("batch-size-%d", size), func(b *testing.B) {
			p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: "bench.v1", BatchSize: size})
			defer p.Close()
			ctx := context.Background()
			if err := p.Send(ctx, msgs...); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Send(ctx, msgs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/record")
		})
	}
}
