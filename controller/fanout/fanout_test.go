package fanout

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestEachLimitAndIsolation(t *testing.T) {
	var running, peak atomic.Int32
	out := Each(context.Background(), 20, 4, func(ctx context.Context, i int) (string, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		running.Add(-1)
		if i == 7 {
			return "", errors.New("boom")
		}
		return fmt.Sprint(i), nil
	})
	if got := peak.Load(); got > 4 || got < 2 {
		t.Fatalf("peak concurrency = %d, want 2..4", got)
	}
	for i, o := range out {
		if o.Index != i {
			t.Fatalf("outcome %d has index %d", i, o.Index)
		}
		if i == 7 {
			if o.Err == nil {
				t.Fatalf("item 7: want error")
			}
			continue
		}
		if o.Err != nil || o.Value != fmt.Sprint(i) {
			t.Fatalf("item %d: %q, %v", i, o.Value, o.Err)
		}
	}
}

func TestEachCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := Each(ctx, 3, 1, func(ctx context.Context, i int) (int, error) { return i, nil })
	for _, o := range out {
		if !errors.Is(o.Err, context.Canceled) {
			t.Fatalf("item %d: err = %v, want context.Canceled", o.Index, o.Err)
		}
	}
}
