package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/storetest"
)

// Several ledgerd instances on one database (each with its own pool) grant, extend and
// release leases of one small account at once: the conditional updates keep the sum of
// reservations within the balance, every refusal reports a true shortage, and the books
// balance.
func TestConcurrentLeasesAcrossInstances(t *testing.T) {
	dsn := storetest.FreshPostgres(t)
	ctx := context.Background()
	var stores []store.Store
	for range 3 {
		s, err := postgres.Open(ctx, dsn, nil, nil)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	a, err := stores[0].CreateAccount(ctx, "shared")
	require.NoError(t, err)
	const balance = 10_000_000 // 10 credits
	_, _, err = stores[0].TopUp(ctx, store.TopUp{AccountID: a.ID, OrderID: "o1", Credits: 10, MicroUSD: 50_000, Method: "admin"})
	require.NoError(t, err)

	const workers, rounds, minimum = 24, 20, 100_000
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			for r := range rounds {
				l, err := s.GrantLease(ctx, store.LeaseGrant{AccountID: a.ID, EdgeID: fmt.Sprint("e", w),
					Want: 400_000, Min: minimum, TTL: time.Minute})
				switch {
				case errors.Is(err, store.ErrInsufficient):
					if l.AccountAvailable >= minimum {
						errs <- fmt.Errorf("grant refused with %d available", l.AccountAvailable)
					}
					continue
				case err != nil:
					errs <- err
					return
				}
				if r%3 == 0 { // some nodes give back at once, having spent a little
					if _, err := stores[(w+1)%len(stores)].ReleaseLease(ctx, l.ID, 1000); err != nil {
						errs <- err
					}
					continue
				}
				_, err = stores[(w+2)%len(stores)].ExtendLease(ctx, l.ID, 200_000, minimum, 0, time.Minute)
				if err != nil && !errors.Is(err, store.ErrInsufficient) {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	acct, err := stores[1].Account(ctx, a.ID)
	require.NoError(t, err)
	require.LessOrEqual(t, acct.Reserved, int64(balance), "never more reserved than the balance")
	require.GreaterOrEqual(t, acct.Available(), int64(0))
	for _, s := range stores {
		require.NoError(t, s.Check(ctx), "reservations equal their leases")
	}
}
